"""A local fake of Slack's Socket Mode WebSocket (wsproto over a plain socket, free port).

slack-sdk's built-in client connects without TLS to any port but 443 ("for library
testing"), so `ws://127.0.0.1:PORT/link` works. The test sends envelopes as Slack
would and reads the client's acknowledgements.
"""
from __future__ import annotations

import json
import queue
import socket
import threading
import time
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage


class FakeSocketMode:
    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.acks: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self._conn: socket.socket | None = None
        self._ws: WSConnection | None = None
        self._send_lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._listener.getsockname()[1]}/link"

    def start(self) -> FakeSocketMode:
        threading.Thread(target=self._accept, name="fake-socket-mode", daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed = True
        for s in (self._conn, self._listener):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass

    def send(self, envelope: dict[str, Any]) -> None:
        assert self.connected.wait(10), "the Socket Mode client never connected"
        self._send(TextMessage(data=json.dumps(envelope)))

    def ack_for(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.acks.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no acknowledgement for envelope {envelope_id}") from None
            if msg.get("envelope_id") == envelope_id:
                return msg

    def _send(self, event) -> None:
        with self._send_lock:
            assert self._ws is not None and self._conn is not None
            self._conn.sendall(self._ws.send(event))

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conn, self._ws = conn, WSConnection(ConnectionType.SERVER)
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        text: list[str] = []
        while not self._closed:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            assert self._ws is not None
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, Request):
                    self._send(AcceptConnection())
                    self._send(TextMessage(data=json.dumps({"type": "hello", "num_connections": 1,
                                                            "connection_info": {"app_id": "A1"}})))
                    self.connected.set()
                elif isinstance(event, TextMessage):
                    text.append(event.data)
                    if event.message_finished:
                        self.acks.put(json.loads("".join(text)))
                        text.clear()
                elif isinstance(event, Ping):
                    self._send(event.response())
                elif isinstance(event, CloseConnection):
                    try:
                        self._send(event.response())
                    except Exception:
                        pass
                    return
