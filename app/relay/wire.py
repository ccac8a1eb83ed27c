"""`Wire`: one TCP or TLS connection of the relay, either side, without copies.

Three ways to consume what arrives:
- reading: a coroutine pulls whole frames with `read_frame` / `read_startup` (login);
- pumping: `on_ready` is called whenever bytes arrive or the connection ends, and the
  owner takes whole frames with `next_frame` (the client side after login: no task
  wake-up per message);
- streaming: `on_data` gets every chunk as received (the target side after login).
"""
from __future__ import annotations

import asyncio
import socket

from .fastlane import WireBase
from .pgwire import MAX_STARTUP, ProtocolError, unpack_i32

PAUSE_ABOVE = 1 << 20  # unread client bytes before TCP pushes back (a held statement)
# libpq's non-blocking API can wait on the socket while the rest of an answer sits in
# OpenSSL's buffer when records are larger than this (psycopg issue 1107); pgbouncer-like
# gateways cap TLS records at 8 KiB for that reason. One SSL write makes one record.
TLS_RECORD = 8192


class ConnectionClosed(Exception):
    pass


class Wire(WireBase, asyncio.Protocol):
    """`data_received` comes from WireBase: in C, it relays the fast lane's messages
    (app/relay/fastlane.py) and passes everything else to `_data_received`."""

    def __init__(self, max_frame: int, initial: bytes = b""):
        self.max_frame = max_frame
        self.transport: asyncio.Transport | None = None
        self.on_data = None  # streaming: callable(bytes)
        self.on_ready = None  # pumping: callable()
        self.on_writable = None  # callable() when writes may go on after a pause
        self.on_lost = None  # callable(exc) once the connection is gone
        self.peer: Wire | None = None  # whose reading we pause while our writes back up
        self.lost: BaseException | bool = False
        self.write_paused = False
        self._buf = initial
        self._pos = 0
        self._extra: list[bytes] = []
        self._extra_len = 0
        self._waiter: asyncio.Future | None = None
        self._reading = True

    # -- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport) -> None:
        if transport.get_extra_info("sslcontext") is not None:
            transport = RecordCapped(transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        try:
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def _data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        if self._pos >= len(self._buf) and not self._extra:
            self._buf, self._pos = data, 0  # the common case: nothing left over, no copy
        else:
            # Joined only once the frame is complete: a large frame must not be
            # re-copied for every chunk it arrives in.
            self._extra.append(data)
            self._extra_len += len(data)
        # Paused before the owner looks: an owner that is waiting for the rest of a large
        # frame resumes reading in next_frame; pausing after it would stop that frame
        # half-way for good (messages over PAUSE_ABOVE used to hang).
        if self._reading and self.buffered > PAUSE_ABOVE:
            self.transport.pause_reading()  # the owner is busy (a held statement): TCP pushes back
            self._reading = False
        if self.on_ready is not None:
            self.on_ready()
        else:
            self._wake()

    def eof_received(self):
        return False  # close the transport

    def connection_lost(self, exc) -> None:
        self.lost = exc or True
        self._wake()
        if self.on_ready is not None:
            self.on_ready()
        if self.on_writable is not None:
            self.on_writable()
        if self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.peer is not None and self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.resume_reading()
        if self.on_writable is not None:
            self.on_writable()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- taking frames ------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos + self._extra_len

    def _gather(self) -> None:
        self._buf = self._buf[self._pos:] + b"".join(self._extra)
        self._pos = 0
        self._extra.clear()
        self._extra_len = 0

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

    async def _more(self) -> None:
        if self.lost:
            raise ConnectionClosed()
        if not self._reading:
            self._reading = True
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.lost and not self.buffered:
            raise ConnectionClosed()

    def take_buffer(self) -> bytes:
        """Whatever was received but not read yet (handing over to streaming mode)."""
        self._gather()
        rest, self._buf = self._buf, b""
        return rest

    # -- writing ------------------------------------------------------------------------

    def write(self, data) -> None:
        if not self.lost:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class RecordCapped:
    """A TLS transport whose writes become records of at most TLS_RECORD bytes: the
    SSL protocol turns each piece of a writelines() into records of its own."""

    __slots__ = ("_inner", "_write", "_writelines")

    def __init__(self, inner):
        self._inner = inner
        self._write = inner.write
        self._writelines = inner.writelines

    def write(self, data) -> None:
        n = len(data)
        if n <= TLS_RECORD:
            self._write(data)
            return
        view = memoryview(data)
        self._writelines([view[i:i + TLS_RECORD] for i in range(0, n, TLS_RECORD)])

    def __getattr__(self, name):
        return getattr(self._inner, name)
