"""PostgreSQL statement classification with a cache that ignores numeric literals (pure).

`classify_postgres` caches by exact text, so `WHERE id = 1` and `WHERE id = 2` are two
parses (tens of microseconds each). Here texts that differ only in standalone numbers
share one entry: every digit of such a number becomes 0, which keeps the text's length
and its parse tree's shape, so the cached statements' offsets still cut the original
text. Only texts where a number can be nothing but a numeric literal are normalised:
pure ASCII, with no quote, dollar sign, backslash or comment. In any other text a digit
could sit inside a string, a quoted identifier or a comment, and those go to
`classify_postgres` untouched.
"""
from __future__ import annotations

import re

from app.bounded import BoundedCache

from .postgres import classify_postgres
from .statement import Statement

CACHE_SIZE = 4096
MAX_TEXT = 8192
_UNSAFE = re.compile(r"['\"$\\]|--|/\*")
# A standalone number: digits with no letter, digit or underscore on either side. Spelled
# to start with a digit, not with the look-behind, so that the regex engine skips ahead
# to the next digit instead of trying every position (twice as fast on a statement).
NUMBER = re.compile(r"[0-9](?<![A-Za-z0-9_][0-9])[0-9]*(?![A-Za-z0-9_])")
_cache: BoundedCache[str, tuple[tuple[Statement, int], ...]] = BoundedCache(CACHE_SIZE)


def classify_postgres_cached(text: str) -> list[Statement]:
    """`classify_postgres(text)`, sharing one parse between texts that differ only in numbers."""
    if len(text) > MAX_TEXT or not text.isascii() or _UNSAFE.search(text):
        return classify_postgres(text)
    shape = NUMBER.sub(_zeros, text)
    if shape == text:
        return classify_postgres(text)
    entry = _cache.get(shape)
    if entry is None:
        try:
            entry = _cache.put(shape, _located(shape))
        except ValueError:
            return classify_postgres(text)
    return [Statement(text[at:at + len(st.text)], st.kind, st.tables, st.functions, st.attributes, st.fingerprint)
            for st, at in entry]


def numberless(text: str) -> str | None:
    """`text` with every standalone number replaced by a single 0: the key under which
    texts that differ only in numbers meet. None where a digit could be anything but a
    numeric literal (the same texts `classify_postgres_cached` does not normalise)."""
    if len(text) > MAX_TEXT or not text.isascii() or _UNSAFE.search(text):
        return None
    return NUMBER.sub("0", text)


def _zeros(m: re.Match) -> str:
    return "0" * (m.end() - m.start())


def _located(shape: str) -> tuple[tuple[Statement, int], ...]:
    out, cursor = [], 0
    for st in classify_postgres(shape):
        at = shape.find(st.text, cursor)
        if at < 0:  # cannot happen for slices of `shape`; never guess
            raise ValueError("statement text not found in its source")
        out.append((st, at))
        cursor = at + len(st.text)
    return tuple(out)
