"""What the relay remembers about a client's conversation with the target (no I/O).

The statements and portals the client made through the relay, and whether the target
confirmed them; the queue of answers expected from the target; and what the recording
says about the statement an answer belongs to.
"""
from __future__ import annotations

import asyncio

from app.masking import Masker

# What a queued answer is for.
PARSE, BIND, DESCRIBE, EXECUTE, CLOSE, SYNC, QUERY, REFUSE, COPY_END = range(9)


class _Named:
    """A statement or portal the client created through the relay; the target confirms it."""

    __slots__ = ("name", "batch", "confirmed", "settled")

    def __init__(self, name: str):
        self.name = name
        self.batch = 0  # the client's batch (Syncs sent) when it was created
        self.confirmed = False
        self.settled: asyncio.Future | None = None  # made by whoever waits for the answer


class Prepared(_Named):
    __slots__ = ("text", "ops", "masks", "masker", "fields", "described", "stamp", "rule", "param_types",
                 "deferred")

    def __init__(self, name, text, ops, masks, masker: Masker | None, stamp, rule: str | None):
        super().__init__(name)
        self.text, self.ops, self.masks, self.masker, self.rule = text, ops, masks, masker, rule
        self.param_types: tuple[int, ...] = ()
        self.deferred = False  # needs a review: checked at every Bind, with its parameters
        self.fields = None  # RowDescription fields, once known ([] for no rows)
        self.described: asyncio.Future | None = None  # set when the relay asked for them
        self.stamp = stamp  # the gate's stamp its check was made under (None: check at the next Bind)


class Portal(_Named):
    __slots__ = ("prepared", "formats", "plan", "params")

    def __init__(self, name, prepared: Prepared, formats, plan, params):
        super().__init__(name)
        self.prepared, self.formats, self.plan, self.params = prepared, formats, plan, params


class Change:
    """Puts a new statement or portal in the client's table at once, and takes it back
    if the target refuses it: PostgreSQL then keeps the old named one (the name was
    taken) or has dropped the unnamed one."""

    __slots__ = ("table", "name", "new", "prev")

    def __init__(self, table: dict, name: str, new: _Named):
        self.table, self.name, self.new = table, name, new
        self.prev = table.get(name)
        table[name] = new

    def settle(self, ok: bool) -> None:
        new = self.new
        if not ok and self.table.get(self.name) is new:
            if self.prev is None or self.name == "":
                del self.table[self.name]
            else:
                self.table[self.name] = self.prev
        new.confirmed = True
        if new.settled is not None and not new.settled.done():
            new.settled.set_result(ok)


class Query:
    """A simple-protocol query in flight: statements (text, allow rule) in result order."""

    __slots__ = ("masker", "statements", "masks")

    def __init__(self, masker: Masker | None, statements: list[tuple[str, str | None]], masks: list[str]):
        self.masker, self.statements, self.masks = masker, statements, masks  # taken from the front


class Pending:
    __slots__ = ("kind", "item", "swallow", "refusal", "batch")

    def __init__(self, kind: int, item=None, swallow: bool = False, refusal: bytes | None = None, batch: int = 0):
        self.kind, self.item, self.swallow, self.refusal, self.batch = kind, item, swallow, refusal, batch


def statement_of(head: Pending) -> dict:
    """What the recording says about the statement an answer belongs to."""
    item = head.item
    if head.kind == QUERY:
        if item is None or not item.statements:
            return {}
        text, rule = item.statements.pop(0)
        event = {"sql": text}
        if rule:
            event["rule"] = rule
        if item.masks:
            event["masks"] = item.masks
        return event
    if head.kind in (PARSE, BIND):
        item = item.new
    if isinstance(item, Portal):
        event = {"sql": item.prepared.text}
        if item.params:
            event["params"] = item.params
        prep = item.prepared
    elif isinstance(item, Prepared):
        event, prep = {"sql": item.text}, item
    else:
        return {}
    if prep.name:
        event["statement"] = prep.name
    if prep.rule:
        event["rule"] = prep.rule
    if prep.masks:
        event["masks"] = sorted({m.rule for m in prep.masks})
    return event
