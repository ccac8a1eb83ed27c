"""Raw HTTP/1.1 through the proxy, byte for byte: plain proxying (absolute-form) and
inside a CONNECT tunnel over TLS. For what real clients will not send."""
from __future__ import annotations

import socket
import ssl
from pathlib import Path

from tests.integration.http.clients import Reply, basic, connect, tunnel_tls


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


def send_h2(proxy_port: int, ca: Path, host: str, port: int, token: str, headers: list[tuple[bytes, bytes]],
            body: bytes = b"", trailers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    """One HTTP/2 request inside a tunnel, with header bytes the h2 library would refuse
    to send unless told not to check them. Status 0: the stream or connection was reset."""
    import h2.config
    import h2.connection
    import h2.events

    sock, reply = connect(proxy_port, host, port, basic("agent", token))
    assert reply.status == 200, reply
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    tls = context.wrap_socket(sock, server_hostname=host)
    assert tls.selected_alpn_protocol() == "h2"
    tls.settimeout(20)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers, end_stream=not body and not trailers)
    if body:
        conn.send_data(stream, body, end_stream=not trailers)
    if trailers:
        conn.send_headers(stream, trailers, end_stream=True)
    tls.sendall(conn.data_to_send())
    status, got, data = 0, {}, b""
    with tls:
        while True:
            try:
                chunk = tls.recv(65536)
            except (OSError, ssl.SSLError):
                break
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    got = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                    status = int(got.get(":status", "0"))
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) and event.stream_id == stream:
                    return Reply(status, got, data)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return Reply(status, got, data)
            tls.sendall(conn.data_to_send())
    return Reply(status, got, data)
