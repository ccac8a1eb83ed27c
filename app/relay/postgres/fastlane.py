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
plain answer (answers.plain_answer) to the statement in flight, when the Python
stream is at rest. Anything else goes to the Python path, after the statement in
flight is handed back to it (`Lane.materialize`, also called by TargetStream.expect),
so that the Python path always finds the queue it would have built itself.

The interface is `attach` below and nothing else: the lane gets callables (is the
Python path at rest, the next batch, the two writes, the answer's end) and the shape
table, and reads no attribute of the conversation, the stream or the wires. Every one
of those callbacks may close the lane; the C side holds its own references across them
(tests/unit/test_fastlane_interface.py drives it through fakes that do).

Without the compiled module, or with AIRLOCK_RELAY_FASTLANE=0, every message takes
the Python path; the tests run the relay both ways.
"""
from __future__ import annotations

import os

from .answers import answer_json, masked_answer
from .state import QUERY, Query

try:
    from ._fastlane import Lane, WireBase
except ImportError:  # not compiled: `pip install -e .` builds it
    Lane = None

    class WireBase:  # type: ignore[no-redef]
        lane = None
        lane_side = 0

        def data_received(self, data: bytes) -> None:
            self.received(data)


def enabled() -> bool:
    return Lane is not None and os.environ.get("AIRLOCK_RELAY_FASTLANE", "1").strip().lower() not in (
        "0", "false", "no", "off")


def attach(conv) -> None:
    """Give the conversation's two wires a lane, until the conversation ends."""
    if not enabled():
        return
    stream, session = conv.stream, conv.session
    rec = session.rec

    def next_batch() -> int:
        conv.batch += 1
        return conv.batch

    def hand_back(statement, rule, masks, masker, since, batch) -> None:
        stream.expect(QUERY, Query(masker, [(statement, rule)], masks), batch=batch, since=since)

    def answered(status: int, batch: int) -> None:
        stream.answered_by_lane(status)
        if status == 0x49 and conv.portals:  # I: outside a block the target dropped its portals
            conv.target_idle(batch)

    # Everything the lane touches, passed explicitly: it reads nothing else of ours.
    lane = Lane(at_rest=conv.at_rest, next_batch=next_batch, write_target=conv.target.write,
                write_client=conv.client.write, shapes=conv.shapes.table, stamp=session.gate.stamp,
                allowed_again=conv.checker.allowed_again, record=rec.event_later if rec is not None else None,
                answer_json=answer_json, masked_answer=masked_answer, hand_back=hand_back,
                stream_at_rest=stream.at_rest, answered=answered, refuse_binary=bool(stream.refuse_binary),
                sample_rows=int(stream.sample_rows))
    stream.lane = lane
    conv.client.lane, conv.client.lane_side = lane, 0
    conv.target.lane, conv.target.lane_side = lane, 1

    def detach(_) -> None:
        lane.materialize()
        conv.lane_carried = lane.carried
        conv.client.lane = conv.target.lane = stream.lane = None
        lane.close()

    conv.done.add_done_callback(detach)
