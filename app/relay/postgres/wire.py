"""`Wire`: the relay's transport, framed as PostgreSQL frames its messages.

A typed message is a type byte and an int32 length that counts itself; the startup
packets have no type byte. Buffering and back-pressure are the core's
(app/relay/transport.py); `data_received` comes from the fast lane's WireBase, which in C
relays the lane's messages (app/relay/postgres/fastlane.py) and passes everything else
on to the transport.
"""
from __future__ import annotations

from ..transport import ConnectionClosed, RecordCapped, Transport
from .fastlane import WireBase
from .protocol import MAX_STARTUP, ProtocolError, unpack_i32

__all__ = ["ConnectionClosed", "RecordCapped", "Wire"]


class Wire(WireBase, Transport):
    """A PostgreSQL connection, either side."""

    def next_frame(self) -> tuple[int, memoryview, memoryview] | None:
        """A whole buffered frame (type, payload, raw bytes), or None without waiting."""
        if len(self._buf) - self._pos < 5:
            if self.buffered < 5:
                if not self._reading and not self.lost:
                    self._reading = True
                    self.transport.resume_reading()
                return None
            self._gather()
        buf, pos = self._buf, self._pos
        length = unpack_i32(buf, pos + 1)[0]
        if length < 4 or length > self.max_frame:
            raise ProtocolError(f"invalid message length {length}" if length < 4 else
                                f"message of {length} bytes exceeds the relay's limit of {self.max_frame}",
                                "08P01" if length < 4 else "54000")
        end = pos + 1 + length
        if len(buf) < end:
            if self.buffered < 1 + length:
                if not self._reading and not self.lost:
                    self._reading = True  # the frame is bigger than the pause mark
                    self.transport.resume_reading()
                return None
            self._gather()
            buf, pos, end = self._buf, 0, 1 + length
        self._pos = end
        view = memoryview(buf)
        return buf[pos], view[pos + 5:end], view[pos:end]

    async def read_frame(self) -> tuple[int, memoryview, memoryview]:
        while True:
            f = self.next_frame()
            if f is not None:
                return f
            await self._more()

    async def read_startup(self) -> memoryview:
        """An untyped startup-phase packet (length first); its payload."""
        while True:
            if self.buffered >= 4:
                self._gather()
                buf = self._buf
                length = unpack_i32(buf, 0)[0]
                if length < 8 or length > MAX_STARTUP:
                    raise ProtocolError("invalid startup packet length")
                if len(buf) >= length:
                    self._pos = length
                    return memoryview(buf)[4:length]
            await self._more()

    async def read_byte(self) -> bytes:
        """One byte (the answer to an SSLRequest)."""
        while not self.buffered:
            await self._more()
        self._gather()
        self._pos = 1
        return self._buf[:1]

