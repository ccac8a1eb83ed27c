"""Allowed statement shapes, remembered per session: the MySQL relay's fast path.

A runtime repeats a handful of statements with different numbers in them (PyMySQL and
most drivers put parameters into the text). The first statement of a shape takes the
full path: classification in the session's sql_mode, then the gate. When the gate
allowed it outright, by a rule that does not read the text, the session remembers the
shape with the gate's stamp; later statements of that shape reuse the verdict, skipping
both, for as long as the stamp holds (the same policy version, the same minute, a store
check younger than the gate's version TTL).

A shape is the text with every standalone number outside a string written as 0; string
literals stay as they are. Only texts in which such a number can be nothing but a
numeric literal, as the server lexes them, have one: printable ASCII, no double quote or
backquote (ANSI_QUOTES identifiers, quoted names), no comment (`#`, `--`, `/* */`,
executable `/*! */`), no backslash (so a string ends at its quote in every sql_mode), no
`$` or `@` (parts of names and variables), no digit after a dot (MySQL reads `db.123` as
a name) and no unterminated string.
Everything else, and every statement that is not a plain read or write (USE, SET, CALL,
transactions, anything that changes how the server reads text), takes the full path.
"""
from __future__ import annotations

import re

from app.sql.cache import MAX_TEXT, NUMBER
from app.types import Operation, Verdict

MAX_SHAPES = 256  # per session
_UNSAFE = re.compile(r"[^\x20-\x7e\t\r\n]|[\"`\\#$@]|--|/\*|\.\s*[0-9]")
# A string literal (kept) or a standalone number (written as 0). Without backslashes a
# string is quote to quote; '' inside one reads as two strings side by side, kept alike.
_TOKEN = re.compile(r"'[^']*'|" + NUMBER.pattern)
_LEADS = ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE")


def shape_of(text: str) -> str | None:
    """The key texts differing only in numeric literals share; None when `text` has none."""
    if len(text) > MAX_TEXT or _UNSAFE.search(text) or text.count("'") % 2:
        return None
    return _key(text)


def _key(text: str) -> str:
    return _TOKEN.sub(_literal, text) if "'" in text else NUMBER.sub("0", text)


def _literal(m: re.Match) -> str:
    found = m.group()
    return found if found[0] == "'" else "0"


class Shape:
    __slots__ = ("stamp", "rule", "masks", "kind")

    def __init__(self, stamp, verdict: Verdict, kind: str):
        self.stamp = stamp
        self.rule = verdict.rule
        self.masks = verdict.masks
        self.kind = kind


class AllowedShapes:
    def __init__(self, gate):
        self.gate = gate
        self._shapes: dict[str, Shape] = {}

    def lookup(self, text: str) -> Shape | None:
        """The remembered verdict for `text`'s shape, if its stamp still holds."""
        if not self._shapes or len(text) > MAX_TEXT:
            return None
        # Without shape_of()'s check: a text that fails it keeps characters in its key
        # (backslashes, comments, non-ASCII, a digit after a dot) that no remembered key
        # has, and an odd quote count too.
        shape = self._shapes.get(_key(text))
        if shape is None:
            return None
        current = self.gate.stamp()
        if shape.stamp != current:
            if current is not None:  # a new policy version or minute: every shape is stale
                self._shapes.clear()
            return None
        return shape

    def remember(self, text: str, op: Operation, verdict: Verdict, stamp, principal) -> None:
        """After the full path allowed `text`, one statement `op`, with `verdict`."""
        words = op.text.split(None, 1)
        if (stamp is None or verdict.action != "allow" or verdict.status is not None
                or verdict.review_id is not None or op.kind not in ("read", "write")
                or not words or words[0].upper() not in _LEADS):
            return
        key = shape_of(text)
        if key is None or not self.gate.shares_verdict(principal, op):
            return
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        self._shapes[key] = Shape(stamp, verdict, op.kind)

    def clear(self) -> None:
        """The session's sql_mode or character set may have changed: classify again."""
        self._shapes.clear()
