"""The relay's fast lane: the steady state of a PostgreSQL conversation, in C.

A runtime mostly repeats a few statements, and each, after its first, takes the path
of an allowed shape (app/gate/shapes.py): one Query, one whole plain answer. Under pgbench the
Python of that path (framing, the shape look-up, the answer scan) made the relay's
event loop, which every transaction waits on, cost a third of a bare pipe's
throughput. `_fastlane.c` runs exactly that path without bytecode, and decides
nothing: it calls the gate's stamp, the checker's token re-check, the masking and the
recorder, as the Python path does.

What the lane takes, from the client: one whole Query in one chunk, ASCII, of a
remembered shape whose stamp holds, when the Python path has nothing buffered,
waiting or in flight, and the client encoding is UTF-8. From the target: the whole
plain answer (pganswer.plain_answer) to the statement in flight, when the Python
stream is at rest. Anything else goes to the Python path, after the statement in
flight is handed back to it (`Lane.materialize`, also called by TargetStream.expect),
so that the Python path always finds the queue it would have built itself.

Without the compiled module, or with AIRLOCK_RELAY_FASTLANE=0, every message takes
the Python path; the tests run the relay both ways.
"""
from __future__ import annotations

import os

from .pganswer import answer_json, masked_answer
from .pgstate import QUERY, Query

try:
    from ._fastlane import Lane, WireBase
except ImportError:  # not compiled: `pip install -e .` builds it
    Lane = None

    class WireBase:  # type: ignore[no-redef]
        lane = None
        lane_side = 0

        def data_received(self, data: bytes) -> None:
            self._data_received(data)


def enabled() -> bool:
    return Lane is not None and os.environ.get("AIRLOCK_RELAY_FASTLANE", "1").strip().lower() not in (
        "0", "false", "no", "off")


def attach(conv) -> None:
    """Give the conversation's two wires a lane, until the conversation ends."""
    if not enabled():
        return
    stream, session = conv.stream, conv.s
    rec = session.rec

    def hand_back(statement, rule, masks, masker, since, batch) -> None:
        stream.expect(QUERY, Query(masker, [(statement, rule)], masks), batch=batch)
        stream._since = since

    lane = Lane(client=conv.client, target=conv.target, conv=conv, stream=stream, shapes=conv.shapes.table,
                portals=conv.portals, stamp=session.gate.stamp, allowed_again=conv.checker.allowed_again,
                record=rec.event_later if rec is not None else None, answer_json=answer_json,
                masked_answer=masked_answer, hand_back=hand_back, target_idle=conv.target_idle,
                refuse_binary=bool(stream.refuse_binary), sample_rows=int(stream.sample_rows),
                statuses=stream.statuses)
    stream.lane = lane
    conv.client.lane, conv.client.lane_side = lane, 0
    conv.target.lane, conv.target.lane_side = lane, 1

    def detach(_) -> None:
        lane.materialize()
        conv.client.lane = conv.target.lane = stream.lane = None
        lane.close()

    conv.done.add_done_callback(detach)
