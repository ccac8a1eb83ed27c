"""A minimal PostgreSQL wire client for what real clients cannot do: direct TLS,
hand-made frames and deliberate garbage."""
from __future__ import annotations

import socket
import ssl
import struct

from app.relay.postgres import protocol as pgwire


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["postgresql"])
    return ctx


class RawClient:
    def __init__(self, host: str, port: int, *, direct_tls: bool = False, tls: bool = True, timeout: float = 10):
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls and not direct_tls:
            sock.sendall(struct.pack("!ii", 8, pgwire.SSL_REQUEST))
            answer = sock.recv(1)
            if answer != b"S":
                raise AssertionError(f"SSLRequest answered {answer!r}")
        if tls:
            sock = tls_context().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def startup(self, user: str, database: str, **params: str) -> None:
        self.send(pgwire.startup_message({"user": user, "database": database, **params}))

    def login(self, user: str, database: str, token: str) -> list[tuple[bytes, bytes]]:
        """Startup + password; the messages up to ReadyForQuery."""
        self.startup(user, database)
        kind, body = self.read()
        assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 3, (kind, body)
        self.send(pgwire.frame(b"p", token.encode() + b"\0"))
        return self.until_ready()

    def read(self) -> tuple[bytes, bytes]:
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack("!i", self.buf[1:5])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the relay")
            self.buf += chunk
        length = struct.unpack("!i", self.buf[1:5])[0]
        kind, body, self.buf = self.buf[:1], self.buf[5:1 + length], self.buf[1 + length:]
        return kind, body

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        out = []
        while True:
            kind, body = self.read()
            out.append((kind, body))
            if kind == b"Z":
                return out

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send(pgwire.query_message(sql))
        return self.until_ready()

    def read_all(self) -> bytes:
        """Everything until the relay closes the connection."""
        data = self.buf
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
        except (ConnectionError, OSError, ssl.SSLError):
            return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def error_fields(body: bytes) -> dict[str, str]:
    return pgwire.parse_fields(memoryview(body))
