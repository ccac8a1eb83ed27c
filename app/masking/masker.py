"""Masker: field rules and detectors, compiled once, applied to JSON, text and rows.

Replacement scheme (one per strategy, the same everywhere):
- redact: "[REDACTED]" for a value masked by field or column name, and
  "[REDACTED:<detector>]" for a secret found by a detector inside a text;
- partial: the last 4 characters kept and the rest replaced by "*"; values shorter
  than 8 characters are replaced by as many "*" (keeping 4 of them would show most);
- hash: "hash:" + the first 16 hex digits of HMAC-SHA256(salt, UTF-8 value).
A value matched by several specs gets the strongest strategy: redact > hash > partial,
and a detector that finds something in a value masked by name can raise its strategy.
"""
from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
import secrets
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import add
from typing import Any

from app.types import MaskSpec

from .detectors import DETECTORS, SEP, Compiled, compile_detectors, scan

STRATEGIES = ("partial", "hash", "redact")  # weakest first: the index is the strength
_CACHE_MAX = 4096
_U_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{4}")
_ESCAPE = re.compile(r"\\.")
# Placeholders for values masked by name: private-use marks and letters g-v, which no
# detector can match, so the scan of the serialised text never touches them.
_NONCE = str.maketrans("0123456789abcdef", "ghijklmnopqrstuv")


class MaskingError(ValueError):
    """The input could not be masked; callers must refuse it rather than pass it on."""


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """What to do with each column of one result set, decided once per RowDescription."""

    columns: tuple[str, ...]
    masked: tuple[tuple[int, int], ...]  # (column index, strategy strength)
    scan: tuple[int, ...]  # columns whose values the detectors must read

    @property
    def needs_work(self) -> bool:
        return bool(self.masked or self.scan)


class Masker:
    def __init__(self, specs: Sequence[MaskSpec], salt: bytes) -> None:
        self._salt = salt.encode() if isinstance(salt, str) else bytes(salt)
        exact: dict[str, int] = {}
        globs: dict[int, list[str]] = {}
        self._strength: dict[str, int] = {}
        for spec in specs:
            if spec.strategy not in STRATEGIES:
                raise ValueError(f"unknown masking strategy {spec.strategy!r}")
            strength = STRATEGIES.index(spec.strategy)
            for name in spec.detectors:
                if name not in DETECTORS:
                    raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
                self._strength[name] = max(self._strength.get(name, -1), strength)
            for pattern in spec.fields:
                low = pattern.lower()
                if any(ch in low for ch in "*?["):
                    globs.setdefault(strength, []).append(fnmatch.translate(low))
                elif low:
                    exact[low] = max(exact.get(low, -1), strength)
        self._exact = exact
        # Strongest first, so a lookup can stop at the first glob that matches.
        self._globs = [(s, re.compile("|".join(globs[s]))) for s in sorted(globs, reverse=True)]
        self._fields = bool(exact or globs)
        self._compiled: Compiled | None = compile_detectors(frozenset(self._strength))
        self._top = max(self._strength.values(), default=-1)
        self._field_cache: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return self._fields or self._compiled is not None

    @property
    def detects(self) -> bool:
        """True when detectors run: the only part that applies to streamed text."""
        return self._compiled is not None

    @property
    def has_fields(self) -> bool:
        """True when field rules exist: they need the whole document, never a stream."""
        return self._fields

    # -- strategies -------------------------------------------------------------------

    def _render(self, strength: int, text: str, detector: str | None) -> str:
        if strength == 2:
            return f"[REDACTED:{detector}]" if detector else "[REDACTED]"
        if strength == 1:
            try:
                raw = text.encode("utf-8", "surrogateescape")  # bytes cells hash as their bytes
            except UnicodeEncodeError:
                raw = text.encode("utf-8", "surrogatepass")
            return "hash:" + hmac.digest(self._salt, raw, hashlib.sha256).hex()[:16]
        if len(text) < 8:
            return "*" * len(text)
        return "*" * (len(text) - 4) + text[-4:]

    def _field(self, name: str) -> int:
        hit = self._field_cache.get(name)
        if hit is not None:
            return hit
        low = name.lower()
        strength = self._exact.get(low, -1)
        for s, rx in self._globs:
            if s <= strength:
                break
            if rx.match(low):
                strength = s
                break
        if len(self._field_cache) >= _CACHE_MAX:
            self._field_cache.clear()
        self._field_cache[name] = strength
        return strength

    def _spans(self, text: str) -> list[tuple[int, int, str]]:
        return scan(self._compiled, text) if self._compiled is not None else []

    def _apply(self, s: str, spans: list[tuple[int, int, str]], stop: int) -> str:
        """s[:stop] with every span that ends by `stop` replaced."""
        parts, pos = [], 0
        for start, end, name in spans:
            if end > stop:
                break
            parts.append(s[pos:start])
            parts.append(self._render(self._strength[name], s[start:end], name))
            pos = end
        parts.append(s[pos:stop])
        return "".join(parts)

    def _text(self, s: str) -> str:
        if self._compiled is None:
            return s
        spans = scan(self._compiled, s)
        return self._apply(s, spans, len(s)) if spans else s

    def _whole(self, text: str, strength: int) -> str:
        if strength < self._top:
            for _, _, name in self._spans(text):
                strength = max(strength, self._strength[name])
        return self._render(strength, text, None)

    # -- JSON -------------------------------------------------------------------------
    # Walking the tree in Python and scanning each string costs several calls per
    # string: too slow for 20 MB/s. Instead the tree is serialised once and the
    # detectors run over that text, where every string (keys too) is a quoted token.
    # Only values masked by name need the tree: they become placeholders first.

    def _pend(self, x: Any, strength: int, pending: list[tuple[str, int]], mark: str) -> Any:
        """Placeholder(s) for what sits under a masked key; null stays null."""
        if x is None:
            return None
        if type(x) is dict:
            return {k: self._pend(y, max(strength, self._field(k)), pending, mark)
                    for k, y in x.items()}
        if type(x) is list:
            return [self._pend(y, strength, pending, mark) for y in x]
        text = x if type(x) is str else "true" if x is True else "false" if x is False else str(x)
        pending.append((text, strength))
        return f"{mark}{len(pending) - 1}\ue001"

    def _by_name(self, v: Any, pending: list[tuple[str, int]], mark: str) -> None:
        if type(v) is dict:
            for k, x in v.items():
                strength = self._field(k)
                if strength >= 0:
                    v[k] = self._pend(x, strength, pending, mark)
                elif type(x) is dict or type(x) is list:
                    self._by_name(x, pending, mark)
        else:
            for x in v:
                if type(x) is dict or type(x) is list:
                    self._by_name(x, pending, mark)

    def _render_pending(self, pending: list[tuple[str, int]]) -> list[str]:
        """JSON for each placeholder. Values whose rule is weaker than some detector are
        scanned together (joined by SEP) to see whether one raises the strategy."""
        top: dict[int, int] = {}
        weak = [i for i, (_, s) in enumerate(pending) if s < self._top]
        if weak and self._compiled is not None:
            texts = [pending[i][0] for i in weak]
            spans = scan(self._compiled, SEP.join(texts), "joined")
            if spans:
                ends = list(map(add, accumulate(map(len, texts)), range(len(texts))))
                for start, _, name in spans:
                    i = weak[bisect_right(ends, start)]
                    top[i] = max(top.get(i, -1), self._strength[name])
        return [json.dumps(self._render(max(s, top.get(i, -1)), text, None), ensure_ascii=False)
                for i, (text, s) in enumerate(pending)]

    def _mask_tokens(self, text: str) -> str:
        """Detectors over serialised JSON, inside string tokens only."""
        assert self._compiled is not None
        blank = text
        if "\\" in text:
            # Each escape becomes as many \x01 (a break character, like every escaped
            # character): offsets stay the same, "\n" cannot pass for an "n" next to a
            # secret, and the quotes left are exactly the token boundaries.
            blank = text.replace("\\\\", "\x01\x01")
            blank = _ESCAPE.sub("\x01\x01", _U_ESCAPE.sub("\x01" * 6, blank))
        spans = scan(self._compiled, blank, "json")
        parts, pos, quotes, seen = [], 0, 0, 0
        for start, end, name in spans:
            quotes += blank.count('"', seen, start)
            seen = start
            if not quotes & 1:
                continue  # outside any string: a number, which detectors leave alone
            segment = text[start:end]
            raw = json.loads(f'"{segment}"') if "\\" in segment else segment  # key blocks
            out = self._render(self._strength[name], raw, name)
            parts.append(text[pos:start])
            parts.append(json.dumps(out, ensure_ascii=False)[1:-1] if raw is not segment else out)
            pos = end
        if not parts:
            return text
        parts.append(text[pos:])
        return "".join(parts)

    def _mask_doc(self, obj: Any, owned: bool) -> str:
        pending: list[tuple[str, int]] = []
        mark = "\ue000" + secrets.token_hex(8).translate(_NONCE)
        try:
            if self._fields and (type(obj) is dict or type(obj) is list):
                if not owned:  # the walk rewrites in place: work on a copy
                    obj = json.loads(json.dumps(obj))
                self._by_name(obj, pending, mark)
            text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        except RecursionError as e:
            raise MaskingError("JSON nested too deeply to mask") from e
        except (TypeError, ValueError) as e:
            raise MaskingError(f"not JSON data: {e}") from e
        if self._compiled is not None:
            text = self._mask_tokens(text)
        if pending:
            done = self._render_pending(pending)
            text = re.sub(f'"{mark}([0-9]+)\ue001"', lambda m: done[int(m[1])], text)
        return text

    def mask_json(self, obj: Any) -> Any:
        """A masked copy of `obj` (in the JSON data model: keys become strings, tuples
        lists); `obj` itself is left alone."""
        if not self.active:
            return obj
        return json.loads(self._mask_doc(obj, owned=False))

    def mask_json_bytes(self, data: bytes) -> bytes:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise MaskingError(f"not JSON: {e}") from e
        text = self._mask_doc(obj, owned=True) if self.active else \
            json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: keep it escaped
            return json.dumps(json.loads(text), separators=(",", ":")).encode("ascii")

    # -- text and rows ----------------------------------------------------------------

    def mask_text(self, s: str) -> str:
        return self._text(s)

    def columns_plan(self, columns: Sequence[str]) -> ColumnPlan:
        cols = tuple(columns)
        masked = []
        if self._fields:
            for i, name in enumerate(cols):
                if name is not None and (strength := self._field(name)) >= 0:
                    masked.append((i, strength))
        by_name = {i for i, _ in masked}
        others = tuple(i for i in range(len(cols)) if i not in by_name) if self.detects else ()
        return ColumnPlan(cols, tuple(masked), others)

    def _cell(self, v: Any, strength: int) -> Any:
        if isinstance(v, (bytes, bytearray, memoryview)):
            # Text columns arrive as UTF-8; anything else round-trips byte for byte.
            text = bytes(v).decode("utf-8", "surrogateescape")
            out = self._whole(text, strength) if strength >= 0 else self._text(text)
            return v if out is text else out.encode("utf-8", "surrogateescape")
        if isinstance(v, str):
            return self._whole(v, strength) if strength >= 0 else self._text(v)
        if v is None:
            return None
        text = "true" if v is True else "false" if v is False else str(v)
        out = self._whole(text, strength) if strength >= 0 else self._text(text)
        return v if out is text else out

    def mask_row(self, plan: ColumnPlan, values: Sequence[Any]) -> list[Any]:
        out = list(values)
        n = len(out)
        for i, strength in plan.masked:
            if i < n and out[i] is not None:
                out[i] = self._cell(out[i], strength)
        for i in plan.scan:
            if i < n and out[i] is not None:
                out[i] = self._cell(out[i], -1)
        return out

    def mask_value(self, column: str | None, value: str) -> str:
        strength = self._field(column) if column is not None and self._fields else -1
        return self._cell(value, strength)
