"""Raw HTTP/1.1 through the proxy, byte for byte: plain proxying (absolute-form) and
inside a CONNECT tunnel over TLS. For what real clients will not send."""
from __future__ import annotations

import socket
import ssl
from pathlib import Path

from tests.integration.http.clients import Reply, basic, tunnel_tls


def read_reply(sock: socket.socket) -> Reply:
    """One response: by Content-Length, chunked, or until the connection closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        while not rest.endswith(b"0\r\n\r\n") and b"\r\n0\r\n" not in rest:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        body, text = b"", rest
        while text:
            size_line, _, text = text.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            body, text = body + text[:size], text[size + 2:]
        return Reply(status, headers, body)
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return Reply(status, headers, rest[:length])
    try:
        while chunk := sock.recv(65536):
            rest += chunk
    except OSError:
        pass
    return Reply(status, headers, rest)


def send_plain(proxy_port: int, token: str, raw: bytes, timeout: float = 20) -> Reply:
    """`raw` is a request head (and body) with {auth} where Proxy-Authorization goes."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout) as sock:
        sock.sendall(raw.replace(b"{auth}", f"Proxy-Authorization: {basic('agent', token)}".encode()))
        try:
            return read_reply(sock)
        except ConnectionResetError:
            return Reply(0, {}, b"")


def send_tunnel(proxy_port: int, ca: Path, host: str, port: int, token: str, raw: bytes,
                timeout: float = 20) -> Reply:
    tls = tunnel_tls(proxy_port, ca, host, port, basic("agent", token))
    tls.settimeout(timeout)
    with tls:
        tls.sendall(raw.replace(b"{auth}\r\n", b""))
        try:
            return read_reply(tls)
        except (ConnectionResetError, ssl.SSLError):
            return Reply(0, {}, b"")
