"""Hand-made clients for what curl, requests and httpx will not send: raw CONNECTs, odd
request lines and Host headers inside a tunnel, and a WebSocket through the proxy."""
from __future__ import annotations

import base64
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import wsproto
import wsproto.events as ws


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def _read_reply(sock, head_only: bool = False) -> Reply:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if head_only:
        return Reply(status, headers, rest)
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Reply(status, headers, rest[:length])


def connect(proxy_port: int, host: str, port: int, auth: str | None, extra_headers: str = "") -> tuple[socket.socket, Reply]:
    """Send a CONNECT; the socket stays open (a tunnel when the reply is 2xx)."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=30)
    lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    sock.sendall(("\r\n".join(lines) + "\r\n" + extra_headers + "\r\n").encode())
    return sock, _read_reply(sock, head_only=True)


def tunnel_tls(proxy_port: int, ca: Path, host: str, port: int, auth: str, sni: str | None = None) -> ssl.SSLSocket:
    sock, reply = connect(proxy_port, host, port, auth)
    assert reply.status == 200, reply
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    return context.wrap_socket(sock, server_hostname=sni or host)


def raw_request(tls: ssl.SSLSocket, request_line: str, headers: dict[str, str], body: bytes = b"") -> Reply:
    head = [request_line] + [f"{k}: {v}" for k, v in headers.items()]
    if body:
        head.append(f"Content-Length: {len(body)}")
    tls.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    return _read_reply(tls)


def websocket(proxy_port: int, ca: Path, host: str, port: int, auth: str, path: str,
              messages: list[str], headers: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Open a WebSocket through the proxy, send `messages`, return (status, replies)."""
    tls = tunnel_tls(proxy_port, ca, host, port, auth)
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    tls.sendall(conn.send(ws.Request(host=f"{host}:{port}", target=path, extra_headers=extra)))
    replies: list[str] = []
    status = 0
    pending = list(messages)
    while True:
        data = tls.recv(65536)
        if not data:
            break
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, ws.AcceptConnection):
                status = 101
                for text in pending:
                    tls.sendall(conn.send(ws.TextMessage(data=text)))
            elif isinstance(event, ws.RejectConnection):
                status = event.status_code
            elif isinstance(event, ws.RejectData):
                if event.body_finished:
                    tls.close()
                    return status, replies
            elif isinstance(event, ws.TextMessage):
                replies.append(event.data)
                if len(replies) == len(messages):
                    tls.sendall(conn.send(ws.CloseConnection(code=1000)))
            elif isinstance(event, ws.CloseConnection):
                tls.close()
                return status, replies
    tls.close()
    return status, replies
