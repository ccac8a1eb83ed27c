"""Forward the target's frames to the client without copying what passes unchanged.

A chunk from the target is cut into frames, and each frame goes to the subclass's
handler for its type (`handlers`: one dict look-up and one call per frame, the hot
loop of the answer side). Frames the subclass leaves alone go out as
slices of the chunk (a whole unchanged chunk goes out as the same object). Frames it
rewrites or drops are cut out of the run. A frame cut by a chunk boundary is buffered
until complete, except rows nobody needs to read (`stream_rows`) and COPY OUT data,
which are forwarded as they arrive however large they are. Frames of the relay's own
(`send`) wait for a frame boundary.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod

from .protocol import ProtocolError, unpack_i32

log = logging.getLogger(__name__)

PASS = None  # a handler's answer: forward the frame unchanged


class Desync(Exception):
    """An answer the relay cannot place: stop rather than risk unmasked rows."""


class FrameScanner(ABC):
    def __init__(self, client, max_frame: int):
        self.client = client
        self.max_frame = max_frame
        self.stream_rows = False  # DataRows pass without being read
        self._skip = 0  # bytes of a streamed frame still to forward
        self._partial: bytearray | None = None
        self._held: list[bytes] = []
        # Message type -> handler(body): PASS, b"" to drop the frame, or the bytes to
        # send instead. The subclass may swap the dict between frames.
        self.handlers: dict = {}

    @abstractmethod
    def unhandled(self, kind: int, body: memoryview):
        """A frame of a type `handlers` has no entry for: as a handler, or raise."""

    @abstractmethod
    def failed(self, reason: str) -> None:
        """The stream cannot go on (desync, oversized frame): end the session."""

    def send(self, frame: bytes) -> None:
        """A frame of the relay's own, placed between the target's frames."""
        if self._skip or self._partial is not None:
            self._held.append(frame)
        else:
            self.client.write(frame)

    def data(self, chunk: bytes) -> None:
        try:
            self._scan(chunk)
        except (Desync, ProtocolError) as exc:
            self.failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - nothing of this chunk was sent: close, never pass it on
            log.exception("relaying the target's answer failed")
            self.failed(f"internal error ({type(exc).__name__})")

    def _scan(self, chunk: bytes) -> None:
        n = len(chunk)
        view = memoryview(chunk)
        out: list = []
        pos = 0
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
            if self._skip:
                self.client.write(chunk)
                return
            out.append(view[:pos])
        elif self._partial is not None:
            pos = self._complete(view, out)
            if self._partial is not None or self._skip:
                self._write(out)
                return
        if self._held:
            out.extend(self._held)
            self._held.clear()
        start = pos
        while pos < n:
            if n - pos < 5:
                self._cut(view, start, pos, out)
                self._partial = bytearray(view[pos:])
                start = n
                break
            kind = chunk[pos]
            length = unpack_i32(view, pos + 1)[0]
            if length < 4:
                raise ProtocolError("the target sent a malformed frame")
            end = pos + 1 + length
            if (kind == 0x44 and self.stream_rows) or kind == 0x64:  # D nobody reads, d (COPY OUT)
                pos = end
                if end > n:
                    self._skip = end - n  # forwarded as it arrives, never buffered
                    break
                continue
            if end > n:
                self._cut(view, start, pos, out)
                if length > self.max_frame:
                    raise Desync(f"a {length}-byte message from the target exceeds the relay's limit")
                self._partial = bytearray(view[pos:])
                start = n
                break
            handler = self.handlers.get(kind)
            body = view[pos + 5:end]
            replacement = handler(body) if handler is not None else self.unhandled(kind, body)
            if replacement is not PASS:
                self._cut(view, start, pos, out)
                if replacement:
                    out.append(replacement)
                start = end
            pos = end
        if not start and not out and n:  # the common case: the whole chunk unchanged
            self.client.write(chunk)
            return
        if start < n:
            out.append(view[start:] if start else chunk)
        self._write(out)

    @staticmethod
    def _cut(view: memoryview, start: int, pos: int, out: list) -> None:
        if pos > start:
            out.append(view[start:pos])

    def _write(self, out: list) -> None:
        if len(out) == 1:
            self.client.write(out[0])
        elif out:
            self.client.write(b"".join(out))

    def _complete(self, view: memoryview, out: list) -> int:
        """Finish the frame buffered from earlier chunks; returns bytes of `view` used."""
        buf = self._partial
        n = len(view)
        pos = 0
        if len(buf) < 5:
            pos = min(5 - len(buf), n)
            buf += view[:pos]
            if len(buf) < 5:
                return pos
        kind = buf[0]
        length = unpack_i32(buf, 1)[0]
        if length < 4:
            raise ProtocolError("the target sent a malformed frame")
        total = 1 + length
        if (kind == 0x44 and self.stream_rows) or kind == 0x64:
            self._partial = None
            out.append(bytes(buf))
            rest = total - len(buf)
            take = min(rest, n - pos)
            out.append(view[pos:pos + take])
            self._skip = rest - take
            return pos + take
        if length > self.max_frame:
            raise Desync(f"a {length}-byte message from the target exceeds the relay's limit")
        take = min(total - len(buf), n - pos)
        buf += view[pos:pos + take]
        pos += take
        if len(buf) < total:
            return pos
        self._partial = None
        raw = memoryview(bytes(buf))
        handler = self.handlers.get(kind)
        replacement = handler(raw[5:]) if handler is not None else self.unhandled(kind, raw[5:])
        out.append(raw if replacement is PASS else replacement)
        return pos
