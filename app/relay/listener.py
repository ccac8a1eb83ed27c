"""The listener of one relay protocol in one worker: accepts on the shared sockets,
runs each connection in a task of its own, keeps the live sessions, and watches their
grants. A protocol says what a connection is (`connection`) and files its sessions in
`sessions` under a key of its choosing (PostgreSQL: its cancel key)."""
from __future__ import annotations

import asyncio
import logging
import socket
from abc import ABC, abstractmethod
from typing import Any

from .config import RelayConfig, relay_config
from .session import GrantWatcher, RelaySession
from .workers import WorkerLink

log = logging.getLogger(__name__)


class Listener(ABC):
    protocol = ""

    def __init__(self, cfg: RelayConfig | None = None, link: WorkerLink | None = None) -> None:
        self.cfg = cfg or relay_config()
        self.link = link or WorkerLink()
        self.sessions: dict[Any, RelaySession] = {}
        self.grants = GrantWatcher(self.protocol, lambda: self.sessions.values())
        self._tasks: set[asyncio.Task] = set()
        self._sockets: list[socket.socket] = []

    def serve_on(self, sockets: list[socket.socket]):
        self._sockets = list(sockets)
        for sock in self._sockets:
            self.spawn(self._accept(sock))
        self.spawn(self.grants.run())
        return self

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self.link.accept_delay()
            if delay:
                await asyncio.sleep(delay)  # let a quieter worker take it
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and the like: back off, keep serving
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            self.link.session_opened(1)  # counted at once: connections often arrive together
            self.spawn(self._handle(conn, addr))

    async def _handle(self, sock: socket.socket, addr) -> None:
        try:
            await self.connection(sock, addr)
        except Exception:  # noqa: BLE001 - one broken connection must not reach the listener
            log.exception("%s connection from %s failed", self.protocol, addr)
            sock.close()
        finally:
            self.link.session_opened(-1)

    @abstractmethod
    async def connection(self, sock: socket.socket, addr) -> None:
        """Serve one accepted (non-blocking) socket until its session ends."""
        ...

    def shutdown_sessions(self) -> None:
        for session in list(self.sessions.values()):
            session.shutdown()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


def client_addr(addr) -> str:
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
