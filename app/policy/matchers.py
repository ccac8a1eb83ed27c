"""Compiled forms of match values: pattern sets, JSON body paths and time windows."""
from __future__ import annotations

import fnmatch
import re
from datetime import datetime
from functools import lru_cache
from typing import Callable, Iterator, Sequence
from zoneinfo import ZoneInfo

from .model import TimeWindow
from .values import DAY_NAMES, GLOB_CHARS, REGEX_PREFIX, json_text


@lru_cache(maxsize=8192)
def _regex(source: str, flags: int) -> re.Pattern[str]:
    # Recompiling every policy version would otherwise re-translate the same patterns.
    return re.compile(source, flags)


class PatternSet:
    """Any-of match over exact strings, globs (fnmatch) and `regex:` patterns.

    Exact strings are a set lookup and all globs are one combined regex, so a value is
    tested in at most 1 + len(regexes) steps. `fold` makes it case-insensitive.
    """

    __slots__ = ("exact", "glob", "regexes", "fold")

    def __init__(self, patterns: Sequence[str], fold: bool) -> None:
        self.fold = fold
        exact: set[str] = set()
        globs: list[str] = []
        regexes: list[re.Pattern[str]] = []
        for p in patterns:
            if p.startswith(REGEX_PREFIX):
                regexes.append(_regex(p[len(REGEX_PREFIX):], re.IGNORECASE if fold else 0))
            elif any(c in GLOB_CHARS for c in p):
                globs.append(fnmatch.translate(p.lower() if fold else p))
            else:
                exact.add(p.lower() if fold else p)
        self.exact = frozenset(exact)
        self.glob = _regex("|".join(globs), 0) if globs else None
        self.regexes = tuple(regexes)

    def match(self, value: str) -> bool:
        if self.fold:
            folded = value.lower()
            if folded in self.exact or (self.glob is not None and self.glob.match(folded)):
                return True
        elif value in self.exact or (self.glob is not None and self.glob.match(value)):
            return True
        for r in self.regexes:
            if r.search(value):
                return True
        return False

    def tester(self) -> Callable[[str], object]:
        """The cheapest callable equivalent to `match` (a bound C method when possible)."""
        if self.fold:
            return self.match
        kinds = bool(self.exact) + (self.glob is not None) + len(self.regexes)
        if kinds == 1:
            if self.regexes:
                return self.regexes[0].search
            return self.glob.match if self.glob is not None else self.exact.__contains__
        return self.match

    def any(self, values: object) -> bool:
        return any(self.match(v) for v in values if isinstance(v, str))  # type: ignore[attr-defined]


class TablePatterns:
    """`tables`: a pattern without a dot also matches the last part of a qualified name,
    so `users` covers `public.users` on SQL connections."""

    __slots__ = ("full", "short")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.full = PatternSet(patterns, fold=True)
        dotless = [p for p in patterns if not p.startswith(REGEX_PREFIX) and "." not in p]
        self.short = PatternSet(dotless, fold=True) if dotless else None

    def any(self, targets: tuple[str, ...], sql: bool) -> bool:
        for t in targets:
            if not isinstance(t, str):
                continue
            if self.full.match(t):
                return True
            if sql and self.short is not None and "." in t and self.short.match(t.rsplit(".", 1)[1]):
                return True
        return False


_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+|\*)\]")


class BodyPath:
    """A `$.a.b[0].c` / `$.items[*].sku` path over a parsed JSON body; matches when any
    scalar it reaches matches one of the patterns."""

    __slots__ = ("steps", "patterns")

    def __init__(self, path: str, patterns: Sequence[str]) -> None:
        self.steps: tuple[str | int | None, ...] = tuple(
            (None if m[1] == "*" else m[1]) if m[1] is not None else (None if m[2] == "*" else int(m[2]))
            for m in _STEP.finditer(path[1:])
        )
        self.patterns = PatternSet(patterns, fold=False)

    def _values(self, body: object) -> Iterator[object]:
        nodes: list[object] = [body]
        for step in self.steps:
            nxt: list[object] = []
            for node in nodes:
                if step is None:  # wildcard: every member of an object or array
                    if isinstance(node, dict):
                        nxt.extend(node.values())
                    elif isinstance(node, list):
                        nxt.extend(node)
                elif isinstance(step, int):
                    if isinstance(node, list) and step < len(node):
                        nxt.append(node[step])
                elif isinstance(node, dict) and step in node:
                    nxt.append(node[step])
            nodes = nxt
        return iter(nodes)

    def match(self, body: object) -> bool:
        for value in self._values(body):
            if value is None or isinstance(value, (str, bool, int, float)):
                if self.patterns.match(json_text(value)):
                    return True
        return False


class TimeMatcher:
    """Days and a time range in a time zone; the days are those of the local date."""

    __slots__ = ("days", "start", "end", "tz")

    def __init__(self, window: TimeWindow) -> None:
        self.days = frozenset(DAY_NAMES.index(d) for d in window.days) if window.days else None
        self.start, self.end = window.between if window.between else (None, None)
        self.tz = ZoneInfo(window.tz)

    def match(self, now: datetime) -> bool:
        local = now.astimezone(self.tz)
        if self.days is not None and local.weekday() not in self.days:
            return False
        if self.start is None or self.end is None:
            return True
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # window across midnight
