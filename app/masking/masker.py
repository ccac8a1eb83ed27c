"""Masker: field rules and detectors, compiled once, applied to JSON, text and rows.

Replacement scheme (one per strategy, the same everywhere):
- redact: "[REDACTED]" for a value masked by field or column name, and
  "[REDACTED:<detector>]" for a secret found by a detector inside a text;
- partial: the last 4 characters kept and the rest replaced by "*"; values shorter
  than 8 characters are replaced by as many "*" (keeping 4 of them would show most);
- hash: "hash:" + the first 16 hex digits of HMAC-SHA256(salt, UTF-8 value).
A value matched by several specs gets the strongest strategy: redact > hash > partial.
"""
from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import add
from bisect import bisect_right
from typing import Any

from app.types import MaskSpec

from .detectors import DETECTORS, SEP, Compiled, compile_detectors, scan

STRATEGIES = ("partial", "hash", "redact")  # weakest first: the index is the strength
_CACHE_MAX = 4096


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


class _Batch:
    __slots__ = ("strs", "refs", "pending")

    def __init__(self) -> None:
        self.strs: list[str] = []
        self.refs: list[tuple[Any, Any, int]] = []  # (container, key, strength or -1)
        self.pending: list[int] = []  # indexes of whole values under a masked key


def _own(v: Any) -> Any:
    """A structural copy with plain types only, for the in-place walk."""
    if isinstance(v, dict):
        return {k: _own(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_own(x) for x in v]
    if isinstance(v, str) and type(v) is not str:
        return str(v)
    return v


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
        self._keys: dict[Any, tuple[int, Any]] = {}

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
            return "hash:" + hmac.new(self._salt, raw, hashlib.sha256).hexdigest()[:16]
        if len(text) < 8:
            return "*" * len(text)
        return "*" * (len(text) - 4) + text[-4:]

    def _field(self, name: str) -> int:
        low = name.lower()
        strength = self._exact.get(low, -1)
        for s, rx in self._globs:
            if s <= strength:
                break
            if rx.match(low):
                strength = s
                break
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
        # A detector asking for more than the field rule wins for the whole value.
        if strength < self._top:
            for _, _, name in self._spans(text):
                strength = max(strength, self._strength[name])
        return self._render(strength, text, None)

    # -- JSON -------------------------------------------------------------------------
    # Strings are not scanned one by one: the walk records each with its place, and
    # _finish scans them all as one text joined by SEP (one regex call per pass, not
    # several per string), then writes back what changed. The walk works in place, on
    # containers the masker owns: mask_json_bytes parsed them, mask_json copied them.

    def _key(self, k: Any) -> tuple[int, Any]:
        """(field strength or -1, masked key or None when the key holds no secret).
        Keys repeat, so both are cached."""
        hit = self._keys.get(k)
        if hit is None:
            if isinstance(k, str):
                masked = self._text(k)
                hit = (self._field(k) if self._fields else -1, None if masked is k else masked)
            else:
                hit = (-1, None)
            if len(self._keys) >= _CACHE_MAX:
                self._keys.clear()
            self._keys[k] = hit
        return hit

    def _walk(self, v: dict | list, batch: _Batch) -> None:
        # The hot loop: exact type tests (owned containers hold plain types only) and
        # bound methods in locals.
        strs, refs, walk = batch.strs, batch.refs, self._walk
        if type(v) is dict:
            renamed = False
            cached = self._keys.get
            for k, x in v.items():
                hit = cached(k)
                strength, renamed_to = hit if hit is not None else self._key(k)
                if renamed_to is not None:
                    renamed = True  # the key held a secret: _rekey deals with it
                elif strength >= 0:
                    v[k] = self._masked(x, strength, batch, v, k)
                elif type(x) is str:
                    strs.append(x)
                    refs.append((v, k, -1))
                elif type(x) is dict or type(x) is list:
                    walk(x, batch)
            if renamed:
                self._rekey(v, batch)
        else:
            for i, x in enumerate(v):
                if type(x) is str:
                    strs.append(x)
                    refs.append((v, i, -1))
                elif type(x) is dict or type(x) is list:
                    walk(x, batch)

    def _rekey(self, v: dict, batch: _Batch) -> None:
        # Rebuilt in place and in order, so the places recorded for other keys hold.
        # Two masked keys may collide; the later one wins, as in any JSON object.
        items = list(v.items())
        v.clear()
        for k, x in items:
            strength, key = self._key(k)
            if key is None:
                v[k] = x
            elif strength >= 0:
                v[key] = self._masked(x, strength, batch, v, key)
            else:
                v[key] = self._eager(x)

    def _eager(self, x: Any) -> Any:
        """`x` masked at once, for the rare value that cannot wait for the batch."""
        if type(x) is str:
            return self._text(x)
        if type(x) is dict or type(x) is list:
            batch = _Batch()
            self._walk(x, batch)
            self._finish(batch)
        return x

    def _masked(self, x: Any, strength: int, batch: _Batch, holder: Any, key: Any) -> Any:
        """What goes at holder[key] under a masked key: every scalar inside is masked,
        whatever its type; null stays null."""
        t = type(x)
        if x is None:
            return None
        if t is dict:
            out: dict[Any, Any] = {}
            for k, y in x.items():
                inner, k2 = self._key(k)
                k2 = k if k2 is None else k2
                out[k2] = self._masked(y, max(strength, inner), batch, out, k2)
            return out
        if t is list:
            for i, y in enumerate(x):
                x[i] = self._masked(y, strength, batch, x, i)
            return x
        text = x if t is str else "true" if x is True else "false" if x is False else str(x)
        if strength >= self._top:
            return self._whole(text, strength)
        # A detector may still call for a stronger strategy: decided in _finish.
        batch.pending.append(len(batch.strs))
        batch.strs.append(text)
        batch.refs.append((holder, key, strength))
        return text

    def _finish(self, batch: _Batch) -> None:
        strs, refs = batch.strs, batch.refs
        top: dict[int, int] = {}  # string index -> strongest detector found in it
        if strs and self._compiled is not None:
            joined = SEP.join(strs)
            spans = scan(self._compiled, joined, joined=True)
            if spans:
                ends = list(map(add, accumulate(map(len, strs)), range(len(strs))))
                for start, _, name in spans:
                    i = bisect_right(ends, start)
                    if top.get(i, -1) < self._strength[name]:
                        top[i] = self._strength[name]
                # Replacements never contain SEP, so the masked text splits back into
                # the same strings, unless a string held SEP itself.
                done = self._apply(joined, spans, len(joined)).split(SEP)
                if len(done) != len(strs):
                    done = [self._text(x) if i in top else x for i, x in enumerate(strs)]
                for i in top:
                    holder, key, strength = refs[i]
                    if strength < 0:
                        holder[key] = done[i]
        for i in batch.pending:
            holder, key, strength = refs[i]
            holder[key] = self._render(max(strength, top.get(i, -1)), strs[i], None)

    def _mask_owned(self, obj: Any) -> Any:
        try:
            if type(obj) is str:
                return self._text(obj)
            if type(obj) is dict or type(obj) is list:
                batch = _Batch()
                self._walk(obj, batch)
                self._finish(batch)
            return obj
        except RecursionError as e:
            raise MaskingError("JSON nested too deeply to mask") from e

    def mask_json(self, obj: Any) -> Any:
        """A masked copy of `obj`; `obj` itself is left alone."""
        if not self.active:
            return obj
        try:
            owned = _own(obj)
        except RecursionError as e:
            raise MaskingError("JSON nested too deeply to mask") from e
        return self._mask_owned(owned)

    def mask_json_bytes(self, data: bytes) -> bytes:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise MaskingError(f"not JSON: {e}") from e
        out = self._mask_owned(obj) if self.active else obj
        text = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: keep it escaped
            return json.dumps(out, separators=(",", ":")).encode("ascii")

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
