"""StreamMasker: detectors over a body that arrives in chunks.

Masking each chunk on its own would let a secret that straddles two chunks through.
So the masker holds back a tail and emits only text that no later byte can change:
- bounded detectors never match across a character outside INNER_CHARS, so text up to
  the last such "break" character is final (JSON quotes and commas, newlines, ...);
- in a long run without a break (a blob), text more than BOUNDED_MAX back from the end
  is final too, except from an "eyJ" on that could be a still-growing JWT;
- a private key block is held from its BEGIN line until its END line (or the quote
  that ends its JSON string) arrives.
The hold is `max_tail` characters (at least 2 * BOUNDED_MAX), 8 times that for a JWT
or a key block; a secret that needs more loses its strategy: what is held becomes
"[REDACTED:jwt]" / "[REDACTED:private_key]" and the rest of it is dropped as it arrives
(fail closed). Only detectors apply: field rules need the whole document, so a caller
whose masker `has_fields` must buffer or refuse. The body must be decoded first: gzip
and friends are the caller's business, this class sees text.
"""
from __future__ import annotations

import codecs
import re

from .detectors import BOUNDED_MAX, INNER_CHARS, PK_BEGIN, PK_END
from .masker import Masker, MaskingError

# A backslash counts as inner here, so that no cut splits an escape ("\u0001") whose
# blanking the scan relies on (see detectors.scan).
_LAST_BREAK = re.compile(rf"(?s).*[^{INNER_CHARS}\\]")
_LAST_NON_JWT = re.compile(r"(?s).*[^A-Za-z0-9_.-]")
# Where a dropped JWT ends; a key block glued to it must still be seen whole.
_JWT_STOP = re.compile(r"[^A-Za-z0-9_.-]|-----BEGIN ")
_BEGIN = re.compile(PK_BEGIN)
_END = re.compile(PK_END)


class StreamMasker:
    def __init__(self, masker: Masker, *, encoding: str = "utf-8", max_tail: int = 4096) -> None:
        self._m = masker
        self._encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
        # Below 2x the longest bounded match, a forced cut could not keep a whole match.
        self._tail = max(int(max_tail), 2 * BOUNDED_MAX)
        # Keys (~3 KB for RSA-4096) and JWTs may be held longer than other matches.
        self._cap = 8 * self._tail
        self._keys = "private_key" in masker.detectors
        self._jwt = "jwt" in masker.detectors
        self._buf = ""
        # While dropping an over-long secret: (where it ends, how much to keep to see
        # that end across chunks, whether the end itself goes too).
        self._skip: tuple[re.Pattern[str], int, bool] | None = None
        self._closed = False

    def feed(self, chunk: bytes) -> bytes:
        if self._closed:
            raise MaskingError("feed() after close()")
        if not self._m.detects:
            return bytes(chunk)
        self._buf += self._decoder.decode(chunk)
        return self._drain(final=False)

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        if not self._m.detects:
            return b""
        self._buf += self._decoder.decode(b"", final=True)
        return self._drain(final=True)

    def _drain(self, final: bool) -> bytes:
        out: list[str] = []
        buf = self._buf
        while True:
            if self._skip is not None:
                pattern, keep, past = self._skip
                m = pattern.search(buf)
                if m is None:
                    # Keep enough to see an END line that is split across chunks.
                    self._buf = buf[-keep:] if keep and not final else ""
                    break
                buf = buf[m.end() if past else m.start():]
                self._skip = None
            if final:
                out.append(self._m.mask_text(buf))
                self._buf = ""
                break
            text, buf = self._step(buf)
            out.append(text)
            if self._skip is None:
                self._buf = buf
                break
        return "".join(out).encode(self._encoding, "surrogateescape")

    def _open_key(self, buf: str) -> int:
        """Where a key block still open at the end of `buf` starts, else len(buf): the
        first BEGIN line after the last END line or quote (either closes a block, see
        detectors.PK_BLOCK)."""
        closed = buf.rfind('"') + 1
        i = buf.rfind("-----END ")
        while i >= closed:
            if (m := _END.match(buf, i)) is not None:
                closed = m.end()
                break
            i = buf.rfind("-----END ", 0, i)
        m = _BEGIN.search(buf, closed)
        return m.start() if m is not None else len(buf)

    def _give_up(self, buf: str, spans: list, at: int, name: str,
                 skip: tuple[re.Pattern[str], int, bool]) -> tuple[str, str]:
        for start, end, _ in spans:
            if start < at < end:
                at = start  # redacting a little more beats emitting half a secret
        self._skip = skip
        self._m.masked += 1  # the secret cut short, replaced here rather than rendered
        return self._m._apply(buf, spans, at) + f"[REDACTED:{name}]", buf[at:]

    def _step(self, buf: str) -> tuple[str, str]:
        """(masked text that is final, the tail to hold back)."""
        n = len(buf)
        spans = self._m._spans(buf)
        limit = self._open_key(buf) if self._keys else n
        if n - limit > self._cap:
            return self._give_up(buf, spans, limit, "private_key", (_END, 64, True))
        m = _LAST_BREAK.match(buf, max(0, limit - self._tail), limit)
        if m is not None:
            cut = m.end()
        else:
            cut = max(0, limit - BOUNDED_MAX)
            escape = buf.find("\\", max(0, cut - 5), cut)
            cut = escape if escape >= 0 else cut
            if self._jwt:
                run = _LAST_NON_JWT.match(buf, 0, limit)
                j = buf.find("eyJ", run.end() if run else 0, limit)
                if j >= 0:
                    if limit - j > self._cap:
                        return self._give_up(buf, spans, j, "jwt", (_JWT_STOP, 0, False))
                    cut = min(cut, j)
        for start, end, name in spans:
            if start < cut < end:
                # A confirmed secret across the cut: emit it whole if nothing can extend
                # it any more, else hold it whole.
                final = end <= limit and (end < n or name == "private_key")
                cut = end if final else start
                break
            if start >= cut:
                break
        return self._m._apply(buf, spans, cut), buf[cut:]
