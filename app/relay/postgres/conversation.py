"""The client -> target direction once logged in: every statement passes the gate.

Simple queries are checked statement by statement before anything is sent; extended
queries at Parse and Bind (extended.py). A refused statement is
replaced by a placeholder that is certain to fail on the target (`airlock refused`, a
syntax error), and the target's error is swapped for ours on the way back. That keeps
the order of answers and the transaction state exactly what PostgreSQL would produce
for a failed statement: the implicit transaction rolls back, an explicit one aborts,
the target skips to Sync, and ReadyForQuery carries the true status.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Protocol

from app.gate import Gate
from app.policy.sql import function_call_refusal
from app.recording import SessionRecording
from app.types import Operation, Principal

from ..config import RelayConfig
from . import fastlane, protocol
from .checks import StatementChecker, binary_refusal, mask_names
from .extended import FLUSH, ExtendedProtocol
from .parity import Barriers, Reading
from .protocol import ProtocolError, error_response
from .reason import TOOL_NAMES
from .state import QUERY, REFUSE, Portal, Prepared, Query
from .stream import TargetStream
from .wire import ConnectionClosed, Wire

REFUSED_PARSE = protocol.parse_message("airlock_refused", "airlock refused") + FLUSH
REFUSED_QUERY = protocol.query_message("airlock refused")


class ConversationSession(Protocol):
    """What a conversation (with its extended handlers and its fast lane) uses of the
    session it belongs to (session.py), and nothing else. The statement checker it asks
    for reads the same session as the relay core's `RelaySession` (app/relay/checker.py)."""

    gate: Gate  # stamp() and current_stamp(): what a verdict was decided under; shapes: verdicts by shape
    principal: Principal | None  # set at login, before the conversation starts
    connection_name: str
    rec: SessionRecording | None  # the fast lane records through it directly

    def statement_checker(self, send: Callable[[bytes], None], flush: Callable[[], None]) -> StatementChecker:
        """The checker of this session's statements; `send` puts a frame between the
        target's, `flush` sends what is buffered for the target (before a hold)."""
        ...

    def record(self, kind: str, data: dict) -> None: ...

    def record_answer(self, sql: str, rule: str | None, masks: list[str], ms: float, answer: bytes,
                      sample_rows: int, masked: int = 0) -> None: ...

    def lost_track(self, reason: str) -> None:
        """The relay can no longer tell what the target does: end the session."""
        ...

    def tag_application(self, app_name: str) -> None:
        """The client set application_name (its run and reason) after login."""
        ...


class Conversation(ExtendedProtocol):
    """The client's messages once logged in, between the `client` and `target` wires; what
    it needs of its session is `ConversationSession`, no more."""

    def __init__(self, session: ConversationSession, client: Wire, target: Wire, cfg: RelayConfig):
        self.session = session
        self.client = client
        self.target = target
        self.stream = TargetStream(self, self.client, sample_rows=cfg.record_rows, max_frame=cfg.max_message,
                                   refuse_binary=cfg.refuse_binary)
        self.prepared: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.batch = 0  # counts Syncs and simple queries sent
        self.reading = Reading()  # how the target reads our text, as it last confirmed
        # "utf-8" while the fast lane may take statements (it checks this): not while the
        # target reads another encoding, nor while a barrier may be needed.
        self.encoding = "utf-8"
        self.barriers = Barriers(asyncio.get_running_loop())
        self.checker: StatementChecker = session.statement_checker(self.stream.send, self._flush)
        self.shapes = session.gate.shapes.table(session.principal, session.connection_name)  # the gate's, by shape
        self.refused = 0
        self.lane_carried = 0  # statements the fast lane relayed (set when it detaches)
        self._out: list = []
        self._skipping = False  # after a refusal in the extended protocol, until Sync
        self._waiting: asyncio.Task | None = None
        self.done: asyncio.Future | None = None
        self._handlers = {
            ord("Q"): self._query, ord("P"): self._parse, ord("B"): self._bind, ord("E"): self._execute,
            ord("D"): self._describe, ord("C"): self._close, ord("S"): self._sync, ord("H"): self._send,
            ord("d"): self._send, ord("c"): self._copy_end, ord("f"): self._copy_end,
            ord("F"): self._function_call,
        }

    # -- the loop -------------------------------------------------------------------

    def start(self) -> asyncio.Future:
        """Handle client messages as they arrive; the future ends with the conversation."""
        self._loop = asyncio.get_running_loop()
        self.done = self._loop.create_future()
        self.client.on_ready = self.pump
        self.target.on_writable = self.pump
        fastlane.attach(self)
        self.pump()
        return self.done

    def pump(self) -> None:
        """Handle every whole message buffered, in order, synchronously. A handler that
        must wait (a hold, a token re-check, a describe) runs on as a task, and
        messages stay buffered until it is done: the order of statements never changes."""
        if self._waiting is not None or self.done.done():
            return
        client, handlers = self.client, self._handlers
        try:
            while not self.target.write_paused:
                if self.barriers.at is not None:
                    self._flush()
                    task = asyncio.Task(self.barriers.wait(), loop=self._loop, eager_start=True)
                    if not task.done():
                        self._waiting = task
                        task.add_done_callback(self._resume)
                        return
                    task.result()
                f = client.next_frame()
                if f is None:
                    self._flush()
                    if client.lost:
                        raise ConnectionClosed()
                    return
                kind, body, raw = f
                if kind == 0x58:  # X: Terminate
                    self._out.append(raw)
                    self._flush()
                    self.done.set_result(None)
                    return
                if self._skipping and kind != 0x53:
                    continue
                handler = handlers.get(kind)
                if handler is None:
                    raise ProtocolError(f"unexpected message type {chr(kind)!r}")
                pending = handler(body, raw)
                if pending is not None:
                    task = asyncio.Task(pending, loop=self._loop, eager_start=True)
                    if not task.done():
                        self._flush()
                        self._waiting = task
                        task.add_done_callback(self._resume)
                        return
                    task.result()
            self._flush()
        except BaseException as exc:  # noqa: BLE001 - the session decides what it means
            if not self.done.done():
                self.done.set_exception(exc)

    def _resume(self, task: asyncio.Task) -> None:
        self._waiting = None
        if self.done.done():
            return
        if task.cancelled():
            self.done.set_exception(ConnectionClosed())
        elif task.exception() is not None:
            self.done.set_exception(task.exception())
        else:
            self.pump()

    def _send(self, body, raw) -> None:
        self._out.append(raw)

    def at_rest(self) -> bool:
        """Nothing buffered, waiting or in flight on the Python path, and the target reads
        UTF-8: the fast lane (fastlane.py) may take the next Query."""
        return (self._waiting is None and not self._skipping and not self._out and not self.client.buffered
                and not self.stream.queue and not self.target.write_paused and not self.target.lost
                and not self.done.done() and self.encoding == "utf-8")

    # -- barriers: wait for the target to confirm how it reads what follows (parity.py) --

    def _reparse_check(self, ops: list[Operation], extended: bool, binding: bool = False) -> bytes | None:
        refused = self.barriers.check(ops, extended=extended, next_batch=self.batch + 1, binding=binding)
        self._update_lane()
        return refused

    def _update_lane(self) -> None:
        r = self.reading
        self.encoding = "held" if self.barriers.in_block else r.codec if r.codec and r.conforming else "refused"

    def target_ready(self, batch: int, status: bytes) -> None:
        """ReadyForQuery for `batch` (called by the stream while the barriers watch)."""
        self.barriers.ready(batch, status)
        self._update_lane()

    def _flush(self) -> None:
        out = self._out
        if out:
            self.target.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    # -- simple protocol ----------------------------------------------------------

    def _query(self, body, raw):
        if not len(body) or body[-1] != 0:
            raise ProtocolError("malformed Query")
        text = self._text(body[:-1])
        if text is not None and not self.barriers.in_block:  # else COMMIT may need a barrier
            hit = self.shapes.lookup(text)
            if hit is not None and self.checker.allowed_again(hit[0]):
                shape, statement = hit
                self._out.append(raw)
                self.batch += 1
                self.stream.expect(QUERY, Query(shape.masker, [(statement, shape.rule)], shape.mask_names),
                                   batch=self.batch)
                return None
        return self._check_query(text, raw)

    async def _check_query(self, text: str | None, raw) -> None:
        if text is None:
            return self._refuse(self.reading.refusal(), extended=False)
        ops = self.checker.operations(text)
        refused = self._reparse_check(ops, extended=False)
        if refused is not None:
            return self._refuse(refused, extended=False)
        stamp = self.session.gate.stamp()
        masks, refusal, rules = await self.checker.check(ops)
        if refusal is not None:
            self.barriers.drop()  # nothing of it runs
            return self._refuse(refusal, extended=False)
        self._track_names(ops)
        if len(ops) == 1:
            self.shapes.remember(text, ops[0], self.checker.verdicts[0], self.checker.masker(masks), stamp,
                                 self.session.principal)
        self._out.append(raw)
        self.batch += 1
        query = Query(self.checker.masker(masks), [(op.text, r) for op, r in zip(ops, rules)], mask_names(masks))
        self.stream.expect(QUERY, query, batch=self.batch)
        self._flush()  # now, while the client is known to be there (an approved statement must not outlive it)

    def _function_call(self, body, raw) -> None:
        self._refuse(error_response("42501", f"airlock: {function_call_refusal()}"), extended=False)

    # -- refusals -------------------------------------------------------------------

    def _refuse(self, error: bytes, extended: bool) -> None:
        self.refused += 1
        if extended:
            self._out.append(REFUSED_PARSE)
            self.stream.expect(REFUSE, True, refusal=error)
            self._skipping = True
        else:
            self._out.append(REFUSED_QUERY)
            self.batch += 1
            self.stream.expect(REFUSE, refusal=error)
            self.stream.expect(QUERY, None, batch=self.batch)
        self._flush()

    def cancel(self) -> bool:
        """A CancelRequest for this session: True if it ended a hold (else the target gets it)."""
        return self.checker.cancel()

    @property
    def statements(self) -> int:
        return self.checker.statements

    @property
    def lane_statements(self) -> int:
        """How many statements the fast lane relayed (recorded with the session's summary)."""
        lane = self.stream.lane
        return lane.carried if lane is not None else self.lane_carried

    # -- text and parameters ------------------------------------------------------

    def _text(self, raw) -> str | None:
        return self.reading.decode(raw)

    # -- called by the target stream ----------------------------------------------

    def target_idle(self, batch: int) -> None:
        """ReadyForQuery 'I' for `batch`: outside a transaction block the target has dropped
        every portal made before it."""
        if self.portals:
            for name in [n for n, p in self.portals.items() if p.batch < batch]:
                del self.portals[name]

    def parameter_changed(self, body: bytes) -> None:
        name, _, rest = body.partition(b"\0")
        value = rest.split(b"\0", 1)[0].decode("utf-8", "replace")
        if name in (b"client_encoding", b"standard_conforming_strings", b"server_encoding"):
            reading = self.reading
            before = (reading.encoding, reading.conforming)
            reading.parameter(name, value)
            self._update_lane()
            if self.done is not None and not self.barriers.expecting and before != (reading.encoding,
                                                                                     reading.conforming):
                # Changed by something the relay could not see (a function calling
                # set_config): statements sent since may have been read the old way.
                self.session.lost_track(f"the target changed {name.decode()} to {value!r} where no statement "
                                  "was seen to change it")
        elif name == b"application_name" and value not in TOOL_NAMES:
            self.session.tag_application(value)

    def record_output(self, event: dict) -> None:
        self.session.record("output", event)

    def record_answer(self, sql: str, rule: str | None, masks: list[str], ms: float, answer: bytes,
                      sample_rows: int, masked: int = 0) -> None:
        self.session.record_answer(sql, rule, masks, ms, answer, sample_rows, masked)

    def lost_track(self, reason: str) -> None:
        self.session.lost_track(reason)

    def binary_refusal(self, plan) -> bytes:
        return binary_refusal(plan)
