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
import gc
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.bounded import BoundedCache
from app.types import MaskSpec

from .detectors import DETECTORS, Compiled, blank_escapes, compile_detectors, scan

STRATEGIES = ("partial", "hash", "redact")  # weakest first: the index is the strength
_CACHE_MAX = 4096
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
        self._field_cache: BoundedCache[str, int] = BoundedCache(_CACHE_MAX)
        self._redacted = {name: f"[REDACTED:{name}]" for name in DETECTORS}

    @property
    def active(self) -> bool:
        return self._fields or self._compiled is not None

    @property
    def detects(self) -> bool:
        """True when detectors run: the only part that applies to streamed text."""
        return self._compiled is not None

    @property
    def detectors(self) -> frozenset[str]:
        """The detectors that run."""
        return frozenset(self._strength)

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
        return self._field_cache.put(name, strength)

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
    # Values masked by name are the only reason to walk the tree: each becomes a
    # placeholder token, "<mark><index>\ue001", followed by its own text when some
    # detector could raise its strategy; the scan then reports into it instead of
    # masking it, and the rendered value replaces the whole token at the end.

    def _pend(self, x: Any, strength: int, pending: list[tuple[str, int]], mark: str) -> Any:
        if x is None:
            return None
        if type(x) is dict:
            return {k: self._pend(y, max(strength, self._field(k)), pending, mark)
                    for k, y in x.items()}
        if type(x) is list:
            return [self._pend(y, strength, pending, mark) for y in x]
        if strength == 2:
            return "[REDACTED]"  # nothing can raise it, and no detector matches it
        text = x if type(x) is str else "true" if x is True else "false" if x is False else str(x)
        pending.append((text, strength))
        tail = text if strength < self._top else ""
        return f"{mark}{len(pending) - 1}\ue001{tail}"

    def _by_name(self, v: Any, pending: list[tuple[str, int]], mark: str) -> None:
        if type(v) is dict:
            cached = self._field_cache.get
            for k, x in v.items():
                strength = cached(k)
                if strength is None:
                    strength = self._field(k)
                if strength >= 0:
                    v[k] = self._pend(x, strength, pending, mark)
                elif type(x) is dict or type(x) is list:
                    self._by_name(x, pending, mark)
        else:
            for x in v:
                if type(x) is dict or type(x) is list:
                    self._by_name(x, pending, mark)

    def _mask_tokens(self, text: str, mark: str | None, raised: dict[int, int]) -> str:
        """Detectors over serialised JSON, inside string tokens only. `mark`: the
        placeholder mark when there are placeholders whose text is in the tokens."""
        assert self._compiled is not None
        # With escapes blanked, "\n" cannot pass for an "n" next to a secret, and the
        # quotes left are exactly the token boundaries.
        blank = blank_escapes(text) if "\\" in text else text
        keep, quotes, seen = [], 0, 0
        for span in scan(self._compiled, blank, "json"):
            start, _, name = span
            # Outside strings only a big integer can look like a secret (a card); the
            # detectors are for strings, so it is left alone. Quote parity tells.
            if name == "credit_card":
                quotes += blank.count('"', seen, start)
                seen = start
                if not quotes & 1:
                    continue
            if mark is not None:
                opening = blank.rfind('"', 0, start) + 1
                if text.startswith(mark, opening):
                    i = int(text[opening + len(mark):text.index("\ue001", opening)])
                    raised[i] = max(raised.get(i, -1), self._strength[name])
                    continue
            keep.append(span)
        if not keep:
            return text
        parts = [""] * (2 * len(keep) + 1)
        parts[0::2] = [text[a:b] for a, b in zip([0] + [e for _, e, _ in keep],
                                                 [s for s, _, _ in keep] + [len(text)])]
        parts[1::2] = [self._render_span(text[s:e], name) for s, e, name in keep]
        return "".join(parts)

    def _render_span(self, segment: str, name: str) -> str:
        strength = self._strength[name]
        if strength == 2:
            return self._redacted[name]
        if "\\" in segment:  # only a key block spans escapes
            out = self._render(strength, json.loads(f'"{segment}"'), name)
            return json.dumps(out, ensure_ascii=False)[1:-1]
        return self._render(strength, segment, name)

    def _quoted(self, strength: int, text: str) -> str:
        out = self._render(strength, text, None)
        # Only a partial mask keeps characters of the value, which may need escaping.
        return f'"{out}"' if strength else json.dumps(out, ensure_ascii=False)

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
        raised: dict[int, int] = {}
        if self._compiled is not None:
            text = self._mask_tokens(text, mark if pending else None, raised)
        if pending:
            quoted = self._quoted

            def placeholder(m: re.Match[str]) -> str:
                i = int(m[1])
                text, strength = pending[i]
                return quoted(max(strength, raised.get(i, -1)), text)

            text = re.sub(f'"{mark}([0-9]+)\ue001(?:[^"\\\\]|\\\\.)*"', placeholder, text)
        return text

    def mask_json(self, obj: Any) -> Any:
        """A masked copy of `obj` (in the JSON data model: keys become strings, tuples
        lists); `obj` itself is left alone."""
        if not self.active:
            return obj
        return json.loads(self._mask_doc(obj, owned=False))

    def mask_json_bytes(self, data: bytes) -> bytes:
        # A 10 MB document makes ~10^6 objects and none can be part of a cycle, yet
        # each allocation burst wakes the cycle collector, which walks the young tree
        # again and again: ~15% of the call. So it is paused for the call, and left
        # off afterwards if it was off before.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._mask_json_bytes(data)
        finally:
            if was_enabled:
                gc.enable()

    def _mask_json_bytes(self, data: bytes) -> bytes:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise MaskingError(f"not JSON: {e}") from e
        if not self.active:
            text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        else:
            text = self._mask_doc(obj, owned=True)
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

    def mask_cell(self, v: Any, strength: int) -> Any:
        """One cell as mask_row masks it: `strength` from a ColumnPlan's `masked`, or -1
        for a column in its `scan`. For code that walks the rows itself (the relay's C
        row loop); the value comes back as it went in when nothing in it is masked."""
        return self._cell(v, strength)

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
