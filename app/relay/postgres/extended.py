"""The extended query protocol of a conversation: Parse, Bind, Execute, Describe, Close, Sync.

A statement is checked at Parse, and again at Bind whenever the gate's stamp has moved
since (so a policy change or a revoked grant reaches prepared statements as soon as
the gate hears of it); one that needs a review passes Parse deferred and is held at
each Bind, with that Bind's values. A Bind or Execute only names what the target has
confirmed, so a masked result is never paired with a plan for something else.
"""
from __future__ import annotations

import asyncio

from pglast import parser as pg_parser
from pglast.enums import DiscardMode

from app.types import Operation

from . import protocol
from .checks import binary_refusal
from .masking import NUMBERS, TEXTLIKE, plan_rows
from .parity import reparses
from .protocol import Bind, error_response
from .state import BIND, CLOSE, COPY_END, DESCRIBE, EXECUTE, PARSE, SYNC, Change, Portal, Prepared

FLUSH = protocol.frame(b"H")
PARAM_CHARS = 200
_NAME_WORDS = ("prepare", "deallocate", "discard", "declare", "close")


class ExtendedProtocol:
    """The extended protocol's handlers, for `Conversation` (conversation.py), whose
    state (prepared statements, portals, the batch, the checker, the stream) they use."""

    async def _parse(self, body, raw) -> None:
        name, query, param_types = protocol.parse_parse(body)
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
        stamp = self.session.gate.stamp() or await self.session.gate.current_stamp()
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
        self._out.append(protocol.describe_message(b"S", prep.name))
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
        if prep.deferred or prep.stamp is None or prep.stamp != self.session.gate.stamp():
            ops = (self.checker.bound(prep.ops, b, prep.param_types, self.reading.codec or "latin-1")
                   if prep.deferred else prep.ops)
            masks, refusal, _ = await self.checker.check(ops)
            if refusal is not None:
                return self._refuse(refusal, extended=True)
            prep.stamp = self.session.gate.stamp() or await self.session.gate.current_stamp()
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
        name = protocol.parse_execute(body)
        portal = await self._settled(self.portals, name)
        if portal is None:
            return self._refuse(error_response("34000", f'airlock: portal "{name}" was not created through airlock'),
                                extended=True)
        self._out.append(raw)
        self.stream.expect(EXECUTE, portal)

    def _describe(self, body, raw) -> None:
        kind, name = protocol.parse_target(body)
        item = (self.prepared if kind == b"S" else self.portals).get(name)
        if item is None and kind == b"P":
            # A cursor DECLAREd in SQL: describe it as its FETCHes will be masked.
            item = self.checker.masker(self.checker.cursors.seen)
        self._out.append(raw)
        self.stream.expect(DESCRIBE, item)

    def _close(self, body, raw) -> None:
        kind, name = protocol.parse_target(body)
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


def _binary_param(value: memoryview, oid: int) -> str | None:
    number = NUMBERS.get(oid)
    if number is not None and len(value) == number.size:
        return str(number.unpack(value)[0])
    if oid in TEXTLIKE:
        return str(value[:PARAM_CHARS * 4], "utf-8", "replace")
    if oid == 16 and len(value) == 1:
        return "true" if value[0] else "false"
    return None
