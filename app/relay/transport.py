"""`Transport`: one TCP or TLS connection of the relay, either side, without copies.

Protocol-neutral: it buffers what arrives (no copy in the common case), pushes back on
TCP when its owner is busy, caps TLS records, and pauses the peer's reading while its
own writes back up. Framing belongs to each protocol (app/relay/postgres/wire.py);
`read_line` is the one framing every line-based protocol shares.

Three ways to consume what arrives:
- reading: a coroutine pulls whole frames, waiting with `_more` (login);
- pumping: `on_ready` is called whenever bytes arrive or the connection ends, and the
  owner takes whole frames without waiting (no task wake-up per message);
- streaming: `on_data` gets every chunk as received.
"""
from __future__ import annotations

import asyncio
import socket


PAUSE_ABOVE = 1 << 20  # unread client bytes before TCP pushes back (a held statement)
# libpq's non-blocking API can wait on the socket while the rest of an answer sits in
# OpenSSL's buffer when records are larger than this (psycopg issue 1107); pgbouncer-like
# gateways cap TLS records at 8 KiB for that reason. One SSL write makes one record.
TLS_RECORD = 8192


class ConnectionClosed(Exception):
    pass


class FrameTooLarge(Exception):
    """A frame longer than the transport's limit: the connection ends."""


class Transport(asyncio.Protocol):
    """A protocol subclass frames what `received` buffers; `max_frame` caps a frame."""

    def __init__(self, max_frame: int, initial: bytes = b""):
        self.max_frame = max_frame
        self.transport: asyncio.Transport | None = None
        self.on_data = None  # streaming: callable(bytes)
        self.on_ready = None  # pumping: callable()
        self.on_writable = None  # callable() when writes may go on after a pause
        self.on_lost = None  # callable(exc) once the connection is gone
        self.peer: Transport | None = None  # whose reading we pause while our writes back up
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

    def data_received(self, data: bytes) -> None:
        self.received(data)

    def received(self, data: bytes) -> None:
        """Bytes from the connection (after the PostgreSQL fast lane, which passes on what
        is not its own: app/relay/postgres/wire.py)."""
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

    async def read_line(self, sep: bytes = b"\n") -> bytes:
        """One line without its separator (a line-based protocol's frame)."""
        while True:
            if self.buffered:
                self._gather()
                end = self._buf.find(sep, self._pos)
                if end >= 0:
                    line, self._pos = self._buf[self._pos:end], end + len(sep)
                    return line
            if self.buffered > self.max_frame:
                raise FrameTooLarge(f"a line over the relay's limit of {self.max_frame} bytes")
            await self._more()

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
