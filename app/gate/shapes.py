"""Allowed statement shapes: the gate's verdicts looked up by text, for the relay's fast path.

Traffic from a runtime repeats a handful of statements with different numbers in them.
The first statement of a shape takes the full path: classification, then the gate.
When the gate allowed it outright, by a rule that does not read the text, the gate
remembers the shape (the text with its numbers zeroed) with its stamp. Later statements
of that shape, from the same principal on the same connection, reuse the verdict,
skipping both, for as long as the stamp holds: the same policy version, the same minute,
and a store check younger than the gate's version TTL. The gate forgets every shape when
the version moves, as it forgets its other cached verdicts.

Everything else takes the full path every time: several statements in one text, a hold
or an approval, a denial, a rule that reads the text, a statement that names prepared
statements or cursors, COPY, a statement that changes how the target reads text.

A table is a plain dict keyed by shape (`ShapeTable.table`): the relay's C fast lane
reads it directly, and the stamp check it makes there is the same as `lookup`'s.
"""
from __future__ import annotations

import re
from collections import OrderedDict

from app.sql import numberless
from app.sql.cache import MAX_TEXT, NUMBER
from app.types import MaskSpec, Operation, Principal, Verdict

MAX_SHAPES = 256  # per principal and connection
MAX_TABLES = 1024  # principals x connections remembered at once
_DIGIT = re.compile(r"[0-9]")
_NAME_WORDS = ("prepare", "deallocate", "discard", "declare", "close")


class Shape:
    """An allowed statement shape: where the statement sits in the text, and its verdict."""

    __slots__ = ("stamp", "lead", "tail", "rule", "masks", "masker", "mask_names", "has_targets")

    def __init__(self, stamp, lead: int, tail: int, verdict: Verdict, masker, has_targets: bool):
        self.stamp = stamp
        self.lead, self.tail = lead, tail  # characters before and after the statement: no digits there
        self.rule = verdict.rule
        self.masks: tuple[MaskSpec, ...] = verdict.masks
        self.masker = masker
        self.mask_names = sorted({m.rule for m in verdict.masks})
        self.has_targets = has_targets


class ShapeTable:
    """The shapes one principal was allowed on one connection."""

    def __init__(self, gate):
        self.gate = gate
        self.table: dict[str, Shape] = {}  # the fast lane's view: cleared, never replaced

    def clear(self) -> None:
        self.table.clear()

    def lookup(self, text: str) -> tuple[Shape, str] | None:
        """The remembered shape of `text` and the statement cut out of it, if still valid."""
        if len(text) > MAX_TEXT:
            return None
        # numberless() without its checks: a text that fails them (non-ASCII, quotes,
        # comments) keeps those characters in its key, and no remembered key has any.
        shape = self.table.get(NUMBER.sub("0", text))
        if shape is None:
            return None
        current = self.gate.stamp()
        if shape.stamp != current:
            if current is not None:  # a new version or minute: every shape remembered is stale
                self.table.clear()
            return None
        return shape, text[shape.lead:len(text) - shape.tail]

    def remember(self, text: str, op: Operation, verdict: Verdict, masker, stamp, principal: Principal) -> None:
        """After the full path allowed `text`, a single statement `op`, with `verdict`
        (decided under `stamp`)."""
        if (stamp is None or verdict.action != "allow" or verdict.status is not None
                or verdict.review_id is not None or any(a.startswith("copy") for a in op.attributes)
                or "reparse" in op.attributes
                or op.text[:10].lower().startswith(_NAME_WORDS)):
            return
        key = numberless(text)
        lead = text.find(op.text)
        if key is None or lead < 0:
            return
        end = lead + len(op.text)
        if _DIGIT.search(text, 0, lead) or _DIGIT.search(text, end):
            return  # the statement's place in the text could move with the numbers
        if not self.gate.shares_verdict(principal, op):
            return
        if len(self.table) >= MAX_SHAPES:
            self.table.clear()
        self.table[key] = Shape(stamp, lead, len(text) - end, verdict, masker, bool(op.targets))


class ShapeMemory:
    """Every shape table of one gate, by (principal, connection)."""

    def __init__(self, gate):
        self._gate = gate
        self._tables: OrderedDict[tuple[Principal, str], ShapeTable] = OrderedDict()

    def table(self, principal: Principal, connection: str) -> ShapeTable:
        key = (principal, connection)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = ShapeTable(self._gate)
            if len(self._tables) > MAX_TABLES:
                # Sessions still holding the oldest table keep it; the stamp still guards it.
                self._tables.popitem(last=False)[1].clear()
        else:
            self._tables.move_to_end(key)
        return table

    def clear(self) -> None:
        for table in self._tables.values():
            table.clear()
