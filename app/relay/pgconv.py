"""The client -> target direction once logged in: every statement passes the gate.

Simple queries are checked statement by statement before anything is sent; extended
queries at Parse, and again at Bind whenever the gate's stamp has moved since (so a
policy change or a revoked grant reaches prepared statements as soon as the gate
hears of it). A refused statement is
replaced by a placeholder that is certain to fail on the target (`airlock refused`, a
syntax error), and the target's error is swapped for ours on the way back. That keeps
the order of answers and the transaction state exactly what PostgreSQL would produce
for a failed statement: the implicit transaction rolls back, an explicit one aborts,
the target skips to Sync, and ReadyForQuery carries the true status.
"""
from __future__ import annotations

import asyncio

from pglast import parser as pg_parser
from pglast.enums import DiscardMode

from app.types import Operation

from . import fastlane, pgwire
from .pgchecks import Checker, binary_refusal, mask_names
from .pgparity import Barriers, Reading, reparses
from .pgflow import TargetStream
from .pgstate import (BIND, CLOSE, COPY_END, DESCRIBE, EXECUTE, PARSE, QUERY, REFUSE, SYNC, Change, Portal, Prepared,
                      Query)
from .pgmask import NUMBERS, TEXTLIKE, plan_rows
from .pgwire import Bind, ProtocolError, error_response
from .wire import ConnectionClosed

FLUSH = pgwire.frame(b"H")
REFUSED_PARSE = pgwire.parse_message("airlock_refused", "airlock refused") + FLUSH
REFUSED_QUERY = pgwire.query_message("airlock refused")
PARAM_CHARS = 200
_NAME_WORDS = ("prepare", "deallocate", "discard", "declare", "close")
_TOOL_NAMES = frozenset({"psql", "pgbench", "pg_dump", "pg_dumpall", "pg_restore", "pg_basebackup", "vacuumdb"})


class Conversation:
    def __init__(self, session, cfg):
        self.s = session
        self.client = session.client
        self.target = session.link.wire
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
        self.checker = Checker(session, self.stream.send, self._flush)
        self.shapes = session.gate.shapes.table(session.principal, session.dbname)  # the gate's, by shape
        self.refused = 0
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

    # -- barriers: wait for the target to confirm how it reads what follows (pgparity) --

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
        stamp = self.s.gate.stamp()
        masks, refusal, rules = await self.checker.check(ops)
        if refusal is not None:
            self.barriers.drop()  # nothing of it runs
            return self._refuse(refusal, extended=False)
        self._track_names(ops)
        if len(ops) == 1:
            self.shapes.remember(text, ops[0], self.checker.verdicts[0], self.checker.masker(masks), stamp,
                                 self.s.principal)
        self._out.append(raw)
        self.batch += 1
        query = Query(self.checker.masker(masks), [(op.text, r) for op, r in zip(ops, rules)], mask_names(masks))
        self.stream.expect(QUERY, query, batch=self.batch)
        self._flush()  # now, while the client is known to be there (an approved statement must not outlive it)

    def _function_call(self, body, raw) -> None:
        # Calls a function by OID: no SQL text to check, so it never passes.
        self._refuse(error_response("42501", "airlock: the function-call protocol is not allowed"), extended=False)

    # -- extended protocol --------------------------------------------------------

    async def _parse(self, body, raw) -> None:
        name, query, param_types = pgwire.parse_parse(body)
        text = self._text(query)
        if text is None:
            return self._refuse(self.reading.refusal(), extended=True)
        ops = self.checker.operations(text)
        refusal = self._reparse_check(ops, extended=True)
        if refusal is not None:
            if name == "":
                self.prepared.pop(name, None)
            return self._refuse(refusal, extended=True)
        masks, refusal, rules = await self.checker.check(ops, defer_review=True)  # held at Bind, with its values
        if refusal is not None:
            if name == "":
                self.prepared.pop(name, None)
            return self._refuse(refusal, extended=True)
        self._track_names(ops)
        rule = next((r for r in rules if r), None)
        # The stamp once decided: nothing awaits between the gate's policy read and here,
        # unless the statement was held; then its approval is what lets it run, and the
        # stamp is read anew (the gate's own is older than the hold by now).
        stamp = self.s.gate.stamp() or await self.s.gate.current_stamp()
        prep = Prepared(name, text, ops, masks, self.checker.masker(masks), stamp, rule)
        prep.param_types = param_types
        prep.deferred = self.checker.deferred
        prep.batch = self.batch
        self._out.append(raw)
        self.stream.expect(PARSE, Change(self.prepared, name, prep))
        if prep.masker is not None:
            self._describe_for(prep)

    def _describe_for(self, prep: Prepared) -> None:
        """Ask the target for the statement's columns ourselves; the answer is swallowed."""
        prep.described = asyncio.get_running_loop().create_future()
        self._out.append(pgwire.describe_message(b"S", prep.name))
        self._out.append(FLUSH)
        self.stream.expect(DESCRIBE, prep, swallow=True)

    async def _bind(self, body, raw) -> None:
        b = Bind(body)
        prep = await self._settled(self.prepared, b.statement)
        if prep is None:
            return self._refuse(error_response(
                "26000", f'airlock: prepared statement "{b.statement}" was not prepared through airlock'),
                extended=True)
        if reparses(prep.ops):  # running it again changes the setting again
            refusal = self._reparse_check(prep.ops, extended=True, binding=True)
            if refusal is not None:
                return self._refuse(refusal, extended=True)
        if prep.deferred or prep.stamp is None or prep.stamp != self.s.gate.stamp():
            ops = self.checker.bound(prep.ops, b, prep.param_types, self.reading.codec or "latin-1") if prep.deferred else prep.ops
            masks, refusal, _ = await self.checker.check(ops)
            if refusal is not None:
                return self._refuse(refusal, extended=True)
            prep.stamp = self.s.gate.stamp() or await self.s.gate.current_stamp()
            if masks != prep.masks:
                prep.masks, prep.masker = masks, self.checker.masker(masks)
                if prep.masker is not None and prep.fields is None and prep.described is None:
                    self._describe_for(prep)
        plan = None
        if prep.masker is not None:
            if prep.fields is None and prep.described is not None:
                self._flush()
                await prep.described
            # No fields: the Parse failed, and the target will skip this Bind as well.
            if prep.fields:
                plan = plan_rows(prep.masker, prep.fields, b.result_formats)
                if plan.nulls and self.stream.refuse_binary:
                    return self._refuse(binary_refusal(plan), extended=True)
        portal = Portal(b.portal, prep, b.result_formats, plan, self._params(b, prep))
        portal.batch = self.batch
        self._out.append(raw)
        self.stream.expect(BIND, Change(self.portals, b.portal, portal))
        if prep.deferred:
            self._flush()  # as for a query: an approved Bind goes out while the client is there

    async def _execute(self, body, raw) -> None:
        name = pgwire.parse_execute(body)
        portal = await self._settled(self.portals, name)
        if portal is None:
            return self._refuse(error_response("34000", f'airlock: portal "{name}" was not created through airlock'),
                                extended=True)
        self._out.append(raw)
        self.stream.expect(EXECUTE, portal)

    def _describe(self, body, raw) -> None:
        kind, name = pgwire.parse_target(body)
        item = (self.prepared if kind == b"S" else self.portals).get(name)
        if item is None and kind == b"P":
            # A cursor DECLAREd in SQL: describe it as its FETCHes will be masked.
            item = self.checker.masker(self.checker.cursor_masks)
        self._out.append(raw)
        self.stream.expect(DESCRIBE, item)

    def _close(self, body, raw) -> None:
        kind, name = pgwire.parse_target(body)
        (self.prepared if kind == b"S" else self.portals).pop(name, None)
        self._out.append(raw)
        self.stream.expect(CLOSE)

    def _sync(self, body, raw) -> None:
        self._skipping = False
        self._out.append(raw)
        if self.stream.copy_in_extended:
            return  # the target ignores Sync while it copies in
        self.batch += 1
        self.stream.expect(SYNC, batch=self.batch)
        self.barriers.synced(self.batch)

    def _copy_end(self, body, raw) -> None:
        self._out.append(raw)
        if self.stream.copy_in_extended:
            self.stream.copy_in_extended = False
        else:
            self.stream.expect(COPY_END)

    def _track_names(self, ops: list[Operation]) -> None:
        """SQL can create and drop the names that Bind and Execute use (PREPARE, DECLARE,
        DEALLOCATE, CLOSE, DISCARD ALL). Forget those names, so that a Bind or Execute by
        such a name is refused instead of being paired with a plan for something else."""
        for op in ops:
            # A statement's text starts at its first keyword (classification cuts it so).
            if not op.text[:10].lower().startswith(_NAME_WORDS):
                continue
            try:
                nodes = [raw.stmt for raw in pg_parser.parse_sql(op.text)]
            except Exception:  # noqa: BLE001 - cannot tell which names: forget them all
                self.prepared.clear()
                self.portals.clear()
                return
            for node in nodes:
                kind = type(node).__name__
                if kind == "PrepareStmt":
                    self.prepared.pop(node.name, None)
                elif kind == "DeallocateStmt":
                    self.prepared.pop(node.name, None) if node.name else self.prepared.clear()
                elif kind == "DeclareCursorStmt":
                    self.portals.pop(node.portalname, None)
                elif kind == "ClosePortalStmt":
                    self.portals.pop(node.portalname, None) if node.portalname else self.portals.clear()
                elif kind == "DiscardStmt" and node.target == DiscardMode.DISCARD_ALL:
                    self.prepared.clear()
                    self.portals.clear()

    async def _settled(self, table: dict, name: str):
        """The statement or portal `name`, once the target has confirmed it.

        One created in this batch needs no wait: if it failed, the target skips the rest
        of the batch anyway. One from an earlier batch may have failed (a name already in
        use), and acting on it unconfirmed could pair a masked result with a plan that
        does not mask it.
        """
        item = table.get(name)
        while item is not None and not item.confirmed and item.batch != self.batch:
            if item.settled is None:
                item.settled = asyncio.get_running_loop().create_future()
            self._flush()
            await item.settled
            item = table.get(name)
        return item

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

    # -- text and parameters ------------------------------------------------------

    def _text(self, raw) -> str | None:
        return self.reading.decode(raw)

    def _params(self, b: Bind, prep: Prepared) -> list:
        """Parameters as the recording shows them: text, masked by the statement's masks."""
        out = []
        types = prep.param_types
        for i, v in enumerate(b.params):
            if v is None:
                out.append(None)
                continue
            if b.param_format(i):
                text = _binary_param(v, types[i] if i < len(types) else 0)
                if text is None:
                    out.append(f"<binary, {len(v)} bytes>")
                    continue
            else:
                text = str(v[:PARAM_CHARS * 4], self.reading.codec or "latin-1", "replace")
            text = text[:PARAM_CHARS]
            out.append(prep.masker.mask_text(text) if prep.masker is not None else text)
        return out

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
                self.s.lost_track(f"the target changed {name.decode()} to {value!r} where no statement "
                                  "was seen to change it")
        elif name == b"application_name" and value not in _TOOL_NAMES:
            self.s.tag_run(value)

    def record_output(self, event: dict) -> None:
        self.s.record("output", event)

    def record_answer(self, sql: str, rule: str | None, masks: list[str], ms: float, answer: bytes,
                      sample_rows: int) -> None:
        self.s.record_answer(sql, rule, masks, ms, answer, sample_rows)

    def lost_track(self, reason: str) -> None:
        self.s.lost_track(reason)

    def binary_refusal(self, plan) -> bytes:
        return binary_refusal(plan)


def _binary_param(value: memoryview, oid: int) -> str | None:
    number = NUMBERS.get(oid)
    if number is not None and len(value) == number.size:
        return str(number.unpack(value)[0])
    if oid in TEXTLIKE:
        return str(value[:PARAM_CHARS * 4], "utf-8", "replace")
    if oid == 16 and len(value) == 1:
        return "true" if value[0] else "false"
    return None
