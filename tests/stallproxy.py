"""A TCP proxy in front of a real server that a test can stall or make refuse.

    with StallProxy(("127.0.0.1", 5432)) as proxy:   # proxy.port forwards to 5432
        proxy.stall()     # bytes stop moving both ways; new connections hang after accept
        proxy.refuse()    # open connections are cut, new ones closed at once
        proxy.heal()      # back to forwarding (stalled bytes are delivered)
"""
from __future__ import annotations

import socket
import threading


class StallProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> StallProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed = True
        self._flowing.set()
        self._listener.close()
        self._cut_all()

    def stall(self) -> None:
        self._flowing.clear()

    def refuse(self) -> None:
        self._refusing = True
        self._cut_all()
        self._flowing.set()

    def heal(self) -> None:
        self._refusing = False
        self._flowing.set()

    def _cut_all(self) -> None:
        with self._lock:
            socks, self._socks = list(self._socks), set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._flowing.wait()  # a stalled proxy accepts, then says nothing
        if self._refusing or self._closed:
            client.close()
            return
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        with self._lock:
            self._socks |= {client, server}
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                if self._refusing:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
