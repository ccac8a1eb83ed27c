"""The local HTTPS upstream the proxy tests talk to: a small ASGI app served by uvicorn
on a self-signed certificate (trusted by the proxy only through a connection's ca_bundle).

Every request that reaches it is logged in `Upstream.seen`, so a test can prove that
something did NOT get through.
"""
from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import json
import socket
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PII = {
    "name": "Ann Example",
    "email": "ann@example.com",
    "ssn": "123-45-6789",
    "note": "reach me at bob@example.org",
    "nested": {"password": "hunter2hunter2", "city": "Lisbon"},
}


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem): a private CA and a leaf for localhost/127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airlock test upstream CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "upstream-ca.pem", directory / "upstream-cert.pem", directory / "upstream-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def big_text(lines: int) -> bytes:
    """Lines full of addresses; chunked later at odd sizes so many straddle a boundary."""
    return b"".join(b"line %06d contact someone.%d@example.com today\n" % (i, i) for i in range(lines))


def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i:i + size]


@dataclass
class Upstream:
    port: int = 0
    seen: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # /held-pii/KEY answers only once held[KEY] is set: an exchange kept in flight for a test.
    held: dict[str, threading.Event] = field(default_factory=dict)

    def hold(self, key: str) -> threading.Event:
        release = self.held[key] = threading.Event()
        return release

    def requests_to(self, prefix: str) -> list[dict]:
        with self.lock:
            return [r for r in self.seen if r["path"].startswith(prefix)]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send)
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        record = {"method": scope["method"], "path": path, "raw_path": scope["raw_path"].decode("latin-1"),
                  "query": scope["query_string"].decode("latin-1"), "headers": headers, "body": body}
        with self.lock:
            self.seen.append(record)
        query = {k: unquote(v) for k, v in (p.split("=", 1) for p in record["query"].split("&") if "=" in p)}
        if path.startswith("/held-pii/"):
            release = self.held.get(path.removeprefix("/held-pii/"))
            if release is not None:
                await asyncio.to_thread(release.wait, 60)
            return await _send(send, 200, json.dumps(PII).encode(), "application/json")
        if path.startswith("/pii"):
            return await _send(send, 200, json.dumps(PII).encode(), "application/json")
        if path.startswith("/text-pii"):
            return await _send(send, 200, b"write to carol@example.net or call", "text/plain")
        if path.startswith("/gzip-json"):
            return await _send(send, 200, gzip.compress(json.dumps(PII).encode()), "application/json",
                               [(b"content-encoding", b"gzip")])
        if path.startswith("/big-text"):
            data = big_text(int(query.get("lines", "40000")))
            encoding = query.get("encoding", "")
            return await _stream(send, data, int(query.get("chunk", "997")), "text/plain", encoding)
        if path.startswith("/big-json"):
            data = json.dumps({"rows": [dict(PII, id=i) for i in range(int(query.get("rows", "5000")))]}).encode()
            return await _stream(send, data, 4093, "application/json", query.get("encoding", ""))
        if path.startswith("/weird-encoding"):
            return await _stream(send, b"x" * 3_000_000, 65536, "text/plain", "", [(b"content-encoding", b"snappy")])
        if path.startswith("/binary"):
            return await _send(send, 200, b"\x89PNG\r\n alice@example.com", query.get("type", "image/png"))
        if path.startswith("/reflect"):
            # Echo the credential the proxy injected, in the form the query names.
            return await _reflect(send, headers.get("authorization", ""), headers.get("x-api-key", ""), query)
        if path.startswith("/cookie"):
            return await _send(send, 200, b"{}", "application/json", [(b"set-cookie", b"session=s3cr3t-value")])
        echo = {"method": record["method"], "path": path, "query": record["query"], "headers": headers,
                "body": body.decode("utf-8", "replace")}
        return await _send(send, 200, json.dumps(echo).encode(), "application/json")

    async def _websocket(self, scope, receive, send):
        with self.lock:
            self.seen.append({"method": "WEBSOCKET", "path": scope["path"], "query": "",
                              "headers": {k.decode(): v.decode() for k, v in scope["headers"]}, "body": b""})
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text") or ""
            await send({"type": "websocket.send", "text": json.dumps({"echo": text, "owner": "dave@example.com"})})


async def _reflect(send, authorization: str, api_key: str, query: dict[str, str]):
    import base64
    from urllib.parse import quote

    token = authorization.partition(" ")[2].encode()
    forms = {
        "raw": authorization.encode(),
        "b64": base64.b64encode(token),
        "b64url-nopad": base64.urlsafe_b64encode(b"\xfb\xff" + token).rstrip(b"="),
        "b64-header-line": base64.b64encode(b"Authorization: " + authorization.encode() + b"\r\n"),
        "b64-key": base64.b64encode(b"k=" + api_key.encode()),
        "urlencoded": quote(authorization, safe="").encode(),
        "hex": token.hex().encode(),
    }
    body = b"\x89PNG\r\n\x1a\n" + forms[query.get("form", "raw")] + b"\x00\x01"
    extra = [(b"x-debug", forms["b64"])] if query.get("header") else []
    if query.get("chunked"):
        return await _stream(send, body, 7, query.get("type", "image/png"), "", extra)
    return await _send(send, 200, body, query.get("type", "image/png"), extra)


async def _send(send, status, body, content_type, extra=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


async def _stream(send, data, chunk, content_type, encoding, extra=()):
    """A chunked response (no content-length), optionally gzip/deflate-compressed."""
    headers = [(b"content-type", content_type.encode()), *extra]
    if encoding == "gzip":
        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        headers.append((b"content-encoding", b"gzip"))
    elif encoding == "deflate":
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        headers.append((b"content-encoding", b"deflate"))
    else:
        compressor = None
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for piece in _chunks(data, chunk):
        if compressor is not None:
            piece = compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if piece:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    tail = compressor.flush() if compressor is not None else b""
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def serve_in_thread(app: Upstream, cert: Path | None, key: Path | None) -> uvicorn.Server:
    """Serve `app` on a free loopback port, over TLS when given a certificate."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listener says so, and without it every keep-alive response waits 40 ms (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app.port = sock.getsockname()[1]
    config = uvicorn.Config(app, ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(key) if key else None,
                            log_level="warning",
                            ws="wsproto", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            return server
        threading.Event().wait(0.02)
    raise RuntimeError("the upstream did not start")


class RawUpstream:
    """A plain-HTTP upstream written on sockets, for what ASGI servers will not send:
    chunked responses with trailers, and header fields a test chooses byte by byte.
    Every request head it receives is kept in `seen` (raw bytes)."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def heads_with(self, marker: bytes) -> list[bytes]:
        with self.lock:
            return [h for h in self.seen if marker in h]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length, chunked = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                if chunked:  # up to the end of the trailer section, kept with the head
                    while b"\r\n0\r\n" not in b"\r\n" + buf or not buf.endswith(b"\r\n\r\n"):
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    length = len(buf)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                with self.lock:
                    self.seen.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                target = head.split(b" ")[1]
                conn.sendall(self._answer(target))

    @staticmethod
    def _answer(target: bytes) -> bytes:
        if target.startswith(b"/trailers"):
            body = b'{"note": "mail eve@example.com", "n": 1}'
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:10], body[10:]))
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                    b"Trailer: X-Checksum\r\n\r\n" + chunks + b"0\r\nX-Checksum: abc123\r\n\r\n")
        if target.startswith(b"/bad-header"):
            return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Evil: a\rSet-Cookie: x=1\r\n"
                    b"Content-Length: 2\r\n\r\nok")
        body = b'{"ok": true}'
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def close(self) -> None:
        self.listener.close()


class H2Upstream:
    """An HTTPS upstream that speaks only HTTP/2 and ends every response with trailers
    (as gRPC does): for what a downgrade to an HTTP/1 client must cope with."""

    def __init__(self, cert: Path, key: Path) -> None:
        import ssl

        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.context.set_alpn_protocols(["h2"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.paths: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events

        try:
            tls = self.context.wrap_socket(sock, server_side=True)
        except OSError:
            return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        with tls:
            while True:
                try:
                    data = tls.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.paths.append(dict(event.headers)[":path"])
                    elif isinstance(event, h2.events.StreamEnded):
                        body = b'{"owner": "frank@example.com"}'
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/json"),
                                                            ("content-length", str(len(body)))])
                        conn.send_data(event.stream_id, body)
                        conn.send_headers(event.stream_id, [("grpc-status", "0"), ("x-checksum", "abc")],
                                          end_stream=True)
                tls.sendall(conn.data_to_send())

    def close(self) -> None:
        self.listener.close()
