"""The shape of a MySQL statement text: the key under which texts that differ only in
numeric literals share a verdict (app/gate/session_shapes.py keeps the verdicts).

A shape is the text with every standalone number outside a string written as 0; string
literals stay as they are. Only texts in which such a number can be nothing but a
numeric literal, as the server lexes them, have one: printable ASCII, no double quote or
backquote (ANSI_QUOTES identifiers, quoted names), no comment (`#`, `--`, `/* */`,
executable `/*! */`), no backslash (so a string ends at its quote in every sql_mode), no
`$` or `@` (parts of names and variables), no digit after a dot (MySQL reads `db.123` as
a name) and no unterminated string.
"""
from __future__ import annotations

import re

from app.sql.cache import MAX_TEXT, NUMBER

_UNSAFE = re.compile(r"[^\x20-\x7e\t\r\n]|[\"`\\#$@]|--|/\*|\.\s*[0-9]")
# A string literal (kept) or a standalone number (written as 0). Without backslashes a
# string is quote to quote; '' inside one reads as two strings side by side, kept alike.
_TOKEN = re.compile(r"'[^']*'|" + NUMBER.pattern)


def shape_of(text: str) -> str | None:
    """The key texts differing only in numeric literals share; None when `text` has none."""
    if len(text) > MAX_TEXT or _UNSAFE.search(text) or text.count("'") % 2:
        return None
    return shape_key(text)


def shape_key(text: str) -> str:
    """shape_of() without its checks, for lookups: a text that fails them keeps
    characters in its key (backslashes, comments, non-ASCII, a digit after a dot) that no
    remembered key has, and an odd quote count too."""
    return _TOKEN.sub(_literal, text) if "'" in text else NUMBER.sub("0", text)


def _literal(m: re.Match) -> str:
    found = m.group()
    return found if found[0] == "'" else "0"
