"""Response bodies on their way back: content-decoding, masking and scrubbing.

Pure helpers plus the chunk functions that mitmproxy calls for streamed responses
(`response.stream = fn`: fn(chunk) -> chunks, and fn(b"") once at the end). A streamed
chunk is still content-encoded, so masking starts by decoding it; what comes out is
identity-encoded. Anything that cannot be decoded or masked is refused, never passed.

A chunk function must never return b"" mid-stream: mitmproxy frames an empty chunk as
the zero-length chunk that ENDS a chunked HTTP/1 response, and the rest is lost. They
return a list instead, empty when there is nothing to send yet.
"""
from __future__ import annotations

import codecs
import json
import zlib
from typing import Callable

Chunks = list[bytes]

import brotli

from app.http.operation import is_json
from app.masking import Masker, MaskingError, StreamMasker

from .flowstate import FlowState

SCRUBBED = b"[REDACTED:credential]"


class DecodeError(ValueError):
    pass


def charset(content_type: str | None) -> str:
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def scrub(data: bytes, secrets: tuple[bytes, ...]) -> bytes:
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, SCRUBBED)
    return data


def mask_body(data: bytes, content_type: str | None, masker: Masker | None, secrets: tuple[bytes, ...]) -> bytes:
    """A whole decoded body, scrubbed and masked. Raises MaskingError when it cannot be."""
    data = scrub(data, secrets)
    if masker is None or not data:
        return data
    if is_json(content_type):
        try:
            return masker.mask_json_bytes(data)
        except MaskingError:
            if masker.has_fields:
                raise  # field rules need the document; detectors alone would miss them
    encoding = charset(content_type)
    try:
        return masker.mask_text(data.decode(encoding, "surrogateescape")).encode(encoding, "surrogateescape")
    except (LookupError, UnicodeError) as exc:
        raise MaskingError(f"cannot read the body as {encoding}: {exc}") from None


# -- incremental content-decoding ---------------------------------------------------

class _Deflate:
    """HTTP "deflate" is zlib-wrapped by the spec and raw deflate in practice: try both."""

    def __init__(self) -> None:
        self._d: zlib._Decompress | None = None
        self._head = b""

    def __call__(self, data: bytes) -> bytes:
        if self._d is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            zlib_wrapped = (self._head[0] & 0x0F) == 8 and int.from_bytes(self._head[:2], "big") % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        return self._d.decompress(data)


def decoder_for(content_encoding: str | None) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for the header's encodings, or None when one is unknown."""
    steps: list[Callable[[bytes], bytes]] = []
    for name in reversed([e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]):
        if name == "identity":
            continue
        if name in ("gzip", "x-gzip"):
            steps.append(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress)
        elif name == "deflate":
            steps.append(_Deflate())
        elif name == "br":
            steps.append(brotli.Decompressor().process)
        else:
            return None

    def decode(data: bytes) -> bytes:
        try:
            for step in steps:
                data = step(data)
        except (zlib.error, brotli.error) as exc:
            raise DecodeError(str(exc)) from None
        return data

    return decode


# -- chunk functions ----------------------------------------------------------------

def _capture(st: FlowState, out: bytes, limit: int) -> Chunks:
    st.streamed_bytes += len(out)
    if st.captured is None:
        st.captured = bytearray()
    room = limit - len(st.captured)
    if room > 0 and out:
        st.captured += out[:room]
    return [out] if out else []


class Passthrough:
    """Unmasked streaming: bytes go through untouched; the start is kept for the recording."""

    def __init__(self, st: FlowState, record_limit: int) -> None:
        self._st, self._limit = st, record_limit

    def __call__(self, chunk: bytes) -> Chunks:
        return _capture(self._st, chunk, self._limit)


class Discard:
    """Swallow the upstream body and answer `body` instead (a refusal after the headers)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __call__(self, chunk: bytes) -> Chunks:
        return [] if chunk else [self._body]


class _Scrubber:
    """`scrub` over a stream: holds back enough to see a secret split across chunks."""

    def __init__(self, secrets: tuple[bytes, ...]) -> None:
        self._secrets = secrets
        self._keep = max(len(s) for s in secrets) - 1
        self._buf = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        buf = scrub(self._buf + data, self._secrets)
        if final:
            self._buf = b""
            return buf
        cut = max(0, len(buf) - self._keep)
        self._buf = buf[cut:]
        return buf[:cut]


class MaskingStream:
    """Detectors and secret scrubbing over a streamed body (JSON field rules need the
    whole document: see WholeDocument). Output is identity-encoded."""

    FAILED = b"\n[airlock: the rest of this response was withheld: it could not be masked]\n"

    def __init__(self, st: FlowState, decode: Callable[[bytes], bytes], masker: Masker | None,
                 record_limit: int, encoding: str = "utf-8") -> None:
        self._st, self._decode, self._limit = st, decode, record_limit
        self._masker, self._encoding = masker, encoding
        self._failed = False
        self._start()

    def _start(self) -> None:
        detects = self._masker is not None and self._masker.detects
        self._sm = StreamMasker(self._masker, encoding=self._encoding) if detects else None
        self._scrubber = _Scrubber(self._st.secrets) if self._st.secrets else None

    def __call__(self, chunk: bytes) -> Chunks:
        if self._failed:
            return []
        final = not chunk
        try:
            data = self._decode(chunk) if chunk else b""
            if self._scrubber is not None:
                data = self._scrubber.feed(data, final)
            if self._sm is not None:
                data = self._sm.feed(data) + (self._sm.close() if final else b"")
        except (DecodeError, MaskingError, LookupError):
            self._failed = True
            data = self.FAILED
        if final and not self._failed:
            self._start()  # an empty chunk mid-stream (HTTP/2 allows it) must not end masking
        return _capture(self._st, data, self._limit)


class WholeDocument:
    """A JSON response of unknown length under field rules: held whole (up to `limit`)
    and masked at the end. The headers are already gone by then, so a failure can only
    replace the body with an error document."""

    def __init__(self, st: FlowState, decode: Callable[[bytes], bytes], masker: Masker, content_type: str,
                 limit: int, record_limit: int) -> None:
        self._st, self._decode, self._masker = st, decode, masker
        self._type, self._limit, self._record_limit = content_type, limit, record_limit
        self._buf = bytearray()
        self._error: str | None = None

    def __call__(self, chunk: bytes) -> Chunks:
        if chunk:
            if self._error is None:
                try:
                    self._buf += self._decode(chunk)
                except DecodeError as exc:
                    self._error = f"the response could not be decoded for masking ({exc})"
                if len(self._buf) > self._limit:
                    self._error = f"the response is larger than {self._limit} bytes and cannot be masked"
                if self._error is not None:
                    self._buf = bytearray()
            return []
        out = b""
        if self._error is None and self._buf:
            try:
                out = mask_body(bytes(self._buf), self._type, self._masker, self._st.secrets)
            except MaskingError as exc:
                self._error = f"the response could not be masked ({exc})"
        if self._error is not None:
            out = json.dumps({"error": "unmaskable", "message": self._error}).encode()
        self._buf = bytearray()
        return _capture(self._st, out, self._record_limit)


def known_encoding(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True
