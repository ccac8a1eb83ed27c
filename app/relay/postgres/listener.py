"""The PostgreSQL relay's listener: a PostgreSQL server to runtimes.

    runtime --TLS, token as password--> relay --vault credential--> target

Before a session starts, the raw socket answers SSLRequest/GSSENCRequest (or sees a
direct TLS ClientHello) and routes CancelRequests, to a session of this worker or,
through the worker link, of another. The accept loop, the task set and the grant
watcher are the core's (app/relay/listener.py); the session is session.py.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct

from app.config import settings

from .. import tls
from ..listen import bind
from ..listener import Listener
from ..config import RelayConfig
from ..workers import WorkerLink
from . import protocol
from .protocol import ProtocolError
from .session import Session
from .wire import ConnectionClosed, Wire

log = logging.getLogger(__name__)


def prepare() -> list[socket.socket]:
    """In the parent, before workers start: the listening sockets and the certificate."""
    cfg = settings()
    tls.ensure_certificate()
    sockets = bind(cfg.bind, cfg.postgres_port)
    log.info("postgres relay listening on %s:%d", cfg.bind, sockets[0].getsockname()[1])
    return sockets


async def start(sockets: list[socket.socket], link: WorkerLink) -> PostgresRelay:
    return PostgresRelay(link=link).serve_on(sockets)


class PostgresRelay(Listener):
    """The listener in one worker: negotiates TLS, runs sessions, routes cancels. Sessions
    are filed under their BackendKeyData (the target's pid, our secret)."""

    protocol = "postgres"

    def __init__(self, cfg: RelayConfig | None = None, link: WorkerLink | None = None):
        super().__init__(cfg, link)
        self.tls = tls.server_context()
        self.tls.set_alpn_protocols(["postgresql"])  # PostgreSQL 17 direct TLS asks for it

    def serve_on(self, sockets: list[socket.socket]) -> PostgresRelay:
        super().serve_on(sockets)
        self.link.listen_for_cancels(asyncio.get_running_loop(), self._cancel_here)
        return self

    async def connection(self, sock: socket.socket, addr) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.cfg.login_timeout):
                negotiated = await self._negotiate(loop, sock)
                if negotiated is None:
                    sock.close()
                    return
                initial, use_tls = negotiated
                wire = Wire(self.cfg.max_message, initial)
                await loop.connect_accepted_socket(lambda: wire, sock, ssl=self.tls if use_tls else None,
                                                   ssl_handshake_timeout=10 if use_tls else None)
        except (OSError, TimeoutError, ConnectionClosed, ProtocolError, struct.error) as exc:
            log.debug("connection from %s failed before login: %s", addr, exc)
            sock.close()
            return
        await Session(self, wire, addr, use_tls).run()

    async def _negotiate(self, loop, sock: socket.socket) -> tuple[bytes, bool] | None:
        """Answer SSLRequest/GSSENCRequest on the raw socket; None when nothing more to do."""
        while True:
            first = await _peek(loop, sock)
            if first is None:
                return None
            if first == 0x16:  # a TLS ClientHello: direct TLS, no SSLRequest
                return b"", True
            head = await _recv_exactly(loop, sock, 8)
            length, code = struct.unpack("!ii", head)
            if length == 8 and code == protocol.SSL_REQUEST:
                await loop.sock_sendall(sock, b"S")
                return b"", True
            if length == 8 and code == protocol.GSSENC_REQUEST:
                await loop.sock_sendall(sock, b"N")
                continue
            if length == 16 and code == protocol.CANCEL_REQUEST:
                self.cancel(*struct.unpack("!ii", await _recv_exactly(loop, sock, 8)))
                return None
            return head, False

    def cancel(self, pid: int, secret: int) -> None:
        if not self._cancel_here(pid, secret):
            self.link.forward_cancel(pid, secret)  # another worker's session, maybe

    def _cancel_here(self, pid: int, secret: int) -> bool:
        """Cancel this worker's session with that key; never passed on (no loops)."""
        session = self.sessions.get((pid, secret))
        if session is not None:
            session.cancel()
        return session is not None


async def _peek(loop, sock: socket.socket) -> int | None:
    fut = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())
    data = sock.recv(1, socket.MSG_PEEK)
    return data[0] if data else None


async def _recv_exactly(loop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise ConnectionClosed()
        data += chunk
    return data
