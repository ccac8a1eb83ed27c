"""A stream reader that knows how many of its bytes are still unread: state the relay owns.

The fast lane (lane.py) may take a client's packet only when the Python path has read
everything that came before it, and may read a target's answer only when nothing the
target sent earlier is still waiting to be read. asyncio's StreamReader keeps its buffer
private, so the relay counts itself: `Counting` stands in front of the stream's protocol
and counts every byte handed to the reader (`fed`), and `Reader`, the only way the relay
reads the stream, counts every byte read from it (`taken`). Unread = fed - taken.

Every read of such a stream must go through its `Reader` (mysql-mimic's login stream
included), or the count would be wrong in the unsafe direction: bytes read behind its
back would count as unread, which only keeps the lane off (`pending` > 0), never on.
"""
from __future__ import annotations

import asyncio


class Reader:
    """The stream's reads, counted (the StreamReader methods the relay uses)."""

    __slots__ = ("stream", "fed", "taken")

    def __init__(self, stream: asyncio.StreamReader):
        self.stream = stream
        self.fed = 0  # bytes handed to `stream` (by Counting)
        self.taken = 0  # bytes read out of it

    @property
    def pending(self) -> int:
        """Bytes received and handed on but not read yet (a command or answer under way)."""
        return self.fed - self.taken

    async def readexactly(self, n: int) -> bytes:
        try:
            data = await self.stream.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            self.taken += len(exc.partial)
            raise
        self.taken += len(data)
        return data

    async def read(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("the relay reads bounded amounts only")
        data = await self.stream.read(n)
        self.taken += len(data)
        return data

    def at_eof(self) -> bool:
        return self.stream.at_eof()

    def exception(self):
        return self.stream.exception()


class Counting(asyncio.Protocol):
    """In front of a StreamReaderProtocol: counts what it hands on, and passes everything
    else through (the writer's flow control and the end of the connection are its)."""

    def __init__(self, inner: asyncio.StreamReaderProtocol, reader: Reader):
        self.inner, self.reader = inner, reader

    def connection_made(self, transport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.reader.fed += len(data)
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def connection_lost(self, exc) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def stream_pair(limit: int) -> tuple[Reader, asyncio.StreamReaderProtocol, Counting]:
    """A counted reader, the StreamReaderProtocol that fills it (a StreamWriter's
    protocol) and the transport's protocol that stands in front of it."""
    stream = asyncio.StreamReader(limit=limit)
    inner = asyncio.StreamReaderProtocol(stream)
    reader = Reader(stream)
    return reader, inner, Counting(inner, reader)


def take_over(transport: asyncio.Transport, limit: int) -> tuple[Reader, asyncio.StreamWriter]:
    """A counted reader and a writer for a connection someone else's reader was reading
    (aiomysql's, after the target login). The old reader gets nothing from here on; the
    server sends nothing after the login's OK until it is asked, and should it have, those
    bytes are dropped with the old reader, never read as the answer to a later command."""
    reader, inner, counting = stream_pair(limit)
    counting.connection_made(transport)
    transport.set_protocol(counting)
    writer = asyncio.StreamWriter(transport, inner, reader.stream, asyncio.get_running_loop())
    return reader, writer
