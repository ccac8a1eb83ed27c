"""Issue 16, findings 10-15: the proxy reads each request as the upstream will, refuses
what the two could read differently, bounds what it holds, and keeps injected
credentials out of every response form. Real proxy, real upstreams, raw sockets."""
from __future__ import annotations

import base64
import socket
import ssl
import threading
import uuid
from urllib.parse import quote

import pytest

from tests.integration.http.clients import Reply, basic, connect, tunnel_tls
from tests.integration.http.conftest import UPSTREAM_KEY, UPSTREAM_TOKEN
from tests.integration.http.rawhttp import read_reply, send_h2, send_plain, send_tunnel


def _unique() -> str:
    return uuid.uuid4().hex[:10]


def test_trailers_from_the_upstream_do_not_crash_the_proxy(proxy, world, agent):
    for path in ("/trailers/plain", "/trailers/masked"):
        raw = (f"GET http://localhost:{world.raw.port}{path}?{_unique()} HTTP/1.1\r\n"
               f"Host: localhost:{world.raw.port}\r\n{{auth}}\r\n\r\n").encode()
        reply = send_plain(proxy.port, agent, raw)
        assert reply.status == 200, (path, reply, proxy.tail())
        assert b'"n": 1' in reply.body
        if path.endswith("masked"):
            assert b"eve@example.com" not in reply.body
    assert "has crashed" not in proxy.tail()


def test_a_bare_cr_in_a_header_value_is_refused_and_never_forwarded(proxy, world, agent, api):
    marker = _unique()
    raw = (f"GET http://localhost:{world.raw.port}/echo/{marker} HTTP/1.1\r\nHost: localhost:{world.raw.port}\r\n"
           f"{{auth}}\r\nX-Note: a\rX-HTTP-Method-Override: DELETE\r\n\r\n").encode()
    reply = send_plain(proxy.port, agent, raw)
    assert reply.status == 400 and b"CR" in reply.body
    assert world.raw.heads_with(marker.encode()) == []
    inner = (f"GET /echo/{marker} HTTP/1.1\r\nHost: localhost:{world.upstream.port}\r\n"
             f"X-Note: a\rHost: evil.example\r\n\r\n").encode()
    reply = send_tunnel(proxy.port, proxy.ca, "localhost", world.upstream.port, agent, inner)
    assert reply.status == 400
    assert world.upstream.requests_to(f"/echo/{marker}") == []


def _peak_rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _send_chunked(proxy, world, agent, head: str, total: int, chunk: bytes) -> Reply:
    """Stream `total` bytes of chunked body inside a tunnel until the proxy answers or
    closes; returns its reply."""
    tls = tunnel_tls(proxy.port, proxy.ca, "localhost", world.upstream.port, basic("agent", agent))
    tls.settimeout(60)
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)

    def upload() -> None:  # while the main thread waits for the answer
        sent = 0
        try:
            tls.sendall(head.encode())
            while sent < total:
                tls.sendall(frame)
                sent += len(chunk)
            tls.sendall(b"0\r\n\r\n")
        except (OSError, ValueError):
            pass  # the proxy answered and closed, or we did

    sender = threading.Thread(target=upload, daemon=True)
    sender.start()
    try:
        return read_reply(tls)
    except (ConnectionResetError, ssl.SSLError):
        return Reply(0, {}, b"")
    finally:
        # Shut down, join, and only then close: closing frees the descriptor while the
        # sender may still be inside SSL_write on it, and a file opened meanwhile (the
        # test's SQLite store, once) gets the same number and the upload's bytes.
        try:
            tls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sender.join(timeout=60)
        assert not sender.is_alive(), "the upload thread did not stop"
        tls.close()


def test_a_chunked_json_body_is_capped_while_it_arrives(proxy, world, agent):
    marker = _unique()
    before = _peak_rss(proxy.proc.pid)
    head = (f"POST /echo/{marker} HTTP/1.1\r\nHost: localhost:{world.upstream.port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    reply = _send_chunked(proxy, world, agent, head, 300 << 20, b'{"a": "' + b"x" * (1 << 20) + b'"}')
    assert reply.status == 413, reply
    assert world.upstream.requests_to(f"/echo/{marker}") == []
    # The JSON limit is 16 MiB: the proxy held about that, not the 300 MiB sent.
    assert _peak_rss(proxy.proc.pid) - before < 96 << 20, (before, _peak_rss(proxy.proc.pid))


def test_a_refused_chunked_upload_is_read_off_the_wire_not_held(proxy, world, agent):
    before = _peak_rss(proxy.proc.pid)
    head = (f"PUT /admin/upload HTTP/1.1\r\nHost: localhost:{world.upstream.port}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    reply = _send_chunked(proxy, world, agent, head, 200 << 20, b"z" * (1 << 20))
    assert reply.status == 403 and reply.json()["error"] == "denied"
    assert _peak_rss(proxy.proc.pid) - before < 64 << 20


def test_overrides_and_paths_through_curl(proxy, world, agent, api):
    cases = [
        (["--path-as-is", f"{api}/ADMIN"], "403"),
        ([f"{api}/%EF%BC%A1DMIN"], "403"),
        (["-X", "POST", "-H", "X-Original-Method: DELETE", f"{api}/echo/x"], "403"),
        (["-H", "X-Method: DELETE", f"{api}/echo/x"], "403"),
        (["-d", "_method=DELETE", f"{api}/echo/x"], "403"),
        (["-F", "_method=DELETE", f"{api}/echo/x"], "403"),
        (["-X", "POST", f"{api}/echo/x?_method=DELETE"], "403"),
        (["-X", "POST", "-H", "X-Method: PUT", f"{api}/echo/x?_method=DELETE"], "400"),
        ([f"{api}/public/%u002e%u002e/admin"], "400"),
        (["-d", "a=1", f"{api}/echo/form-ok"], "200"),
    ]
    for args, status in cases:
        out = proxy.curl(agent, *args)
        assert out.stdout.rsplit("\n", 1)[-1] == status, (args, out.stdout, out.stderr)


def test_a_case_sensitive_connection_keeps_case(proxy, world, agent):
    marker = _unique()
    with proxy.requests(agent) as s:
        upper = s.get(f"http://localhost:{world.plain.port}/ADMIN/{marker}", timeout=30)
        lower = s.get(f"http://localhost:{world.plain.port}/admin/{marker}", timeout=30)
    assert upper.status_code == 200 and lower.status_code == 403
    assert [r["path"] for r in world.plain.requests_to("/")
            if marker in r["path"]] == [f"/ADMIN/{marker}"]


@pytest.mark.parametrize("form", ["raw", "b64", "b64url-nopad", "b64-header-line", "b64-key", "urlencoded", "hex"])
@pytest.mark.parametrize("chunked", [False, True])
def test_injected_credentials_never_come_back_in_any_form(proxy, world, agent, api, form, chunked):
    token = UPSTREAM_TOKEN.encode()
    with proxy.requests(agent) as s:
        r = s.get(f"{api}/reflect", params={"form": form, "header": "1", **({"chunked": "1"} if chunked else {})})
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert b"[REDACTED:credential]" in r.content
    everything = r.content + repr(r.headers).encode()
    for leak in (token, base64.b64encode(token), base64.urlsafe_b64encode(token).rstrip(b"="),
                 quote(UPSTREAM_TOKEN, safe="").encode(), token.hex().encode(), UPSTREAM_KEY.encode(),
                 base64.b64encode(b"k=" + UPSTREAM_KEY.encode())[4:-4]):
        assert leak not in everything, (form, leak)
    # What the runtime gets holds none of the token's base64 at any alignment.
    for k in range(3):
        core = base64.b64encode(b"\0" * k + token)[(0, 2, 3)[k]:(8 * (k + len(token))) // 6]
        assert core not in everything and core.replace(b"+", b"-").replace(b"/", b"_") not in everything


@pytest.mark.parametrize("chunked", [False, True])
def test_binary_media_under_a_mask_are_refused_unless_a_rule_lets_them_through(proxy, agent, api, chunked):
    extra = {"chunked": "1"} if chunked else {}
    with proxy.requests(agent) as s:
        gif = s.get(f"{api}/reflect", params={"type": "image/gif", **extra})
        png = s.get(f"{api}/reflect", params={"type": "image/png", **extra})
        wild = s.get(f"{api}/reflect", params={"type": "image/x-icon", **extra})
        pdf = s.get(f"{api}/binary", params={"type": "application/pdf"})
    assert gif.status_code == 502 and gif.json()["error"] == "unmaskable" and "image/gif" in gif.json()["message"]
    assert pdf.status_code == 502
    assert png.status_code == 200 and wild.status_code == 200  # unmasked_types: [image/png, image/x-*]


def _h2_head(world, method: bytes, path: bytes, marker: str, extra=()) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":path", path), (b":scheme", b"https"),
            (b":authority", f"localhost:{world.upstream.port}".encode()), (b"x-case", marker.encode()), *extra]


@pytest.mark.parametrize("method,path,extra", [
    (b"GET", b"/echo/h2", [(b"x-note", b"a\rX-HTTP-Method-Override: DELETE")]),
    (b"GET", b"/echo/h2", [(b"x-note", b"a\r\nHost: evil.example")]),
    (b"GET", b"/echo/h2", [(b"x-note", b"a\x00b")]),
    (b"GET", b"/echo/h2", [(b"x note", b"1")]),
    (b"GET", b"/public /admin", []),
    (b"GET", b"/public\r\nX-A: 1", []),
    (b"GET /admin", b"/public", []),
    (b"GET", b"/ADMIN", []),
    (b"POST", b"/echo/h2", [(b"x-original-method", b"DELETE")]),
    (b"GET", b"/admin#x", []),
])
def test_http2_requests_are_held_to_the_same_rules(proxy, world, agent, method, path, extra):
    marker = _unique()
    reply = send_h2(proxy.port, proxy.ca, "localhost", world.upstream.port, agent,
                    _h2_head(world, method, path, marker, extra))
    assert reply.status in (0, 400, 403), reply  # 0: mitmproxy's HTTP/2 layer reset the stream
    with world.upstream.lock:
        assert not any(r["headers"].get("x-case") == marker for r in world.upstream.seen)


@pytest.mark.parametrize("trailers", [None, [(b"x-http-method-override", b"DELETE")]])
def test_http2_request_trailers_never_reach_an_http1_upstream(proxy, world, agent, trailers):
    marker = _unique()
    reply = send_h2(proxy.port, proxy.ca, "localhost", world.upstream.port, agent,
                    _h2_head(world, b"POST", f"/echo/{marker}".encode(), marker,
                             [(b"content-type", b"application/octet-stream")]),
                    body=b"payload", trailers=trailers)
    assert reply.status == 200, (reply, proxy.tail())
    (seen,) = world.upstream.requests_to(f"/echo/{marker}")
    assert seen["body"] == b"payload" and "x-http-method-override" not in seen["headers"]
    assert "has crashed" not in proxy.tail()


def test_an_http2_body_without_length_cannot_smuggle_a_request_to_an_http1_upstream(proxy, world, agent):
    marker = _unique()
    smuggled = (f"DELETE /admin/smuggled-{marker} HTTP/1.1\r\nHost: localhost:{world.upstream.port}\r\n"
                "Content-Length: 0\r\n\r\n").encode()
    for content_type in (b"application/octet-stream", b"application/json"):
        reply = send_h2(proxy.port, proxy.ca, "localhost", world.upstream.port, agent,
                        _h2_head(world, b"POST", f"/echo/{marker}".encode(), marker, [(b"content-type", content_type)]),
                        body=smuggled)
        assert reply.status in (200, 400), reply  # the JSON one is not JSON: 400
    assert world.upstream.requests_to(f"/admin/smuggled-{marker}") == []
    (seen,) = world.upstream.requests_to(f"/echo/{marker}")
    assert seen["body"] == smuggled and seen["headers"]["content-length"] == str(len(smuggled))


@pytest.mark.parametrize("extra", ["X-Note: a\rHost: evil.example\r\n", "X-Note: a\r\n folded\r\n",
                                   "X-Note: a\x00b\r\n", "Bad Name: 1\r\n"])
def test_a_connect_with_a_malformed_header_field_opens_no_tunnel(proxy, world, agent, extra):
    sock, reply = connect(proxy.port, "localhost", world.upstream.port, basic("agent", agent), extra)
    sock.close()
    assert reply.status == 400


def test_http2_response_trailers_do_not_crash_an_http1_client(proxy, world, agent):
    """The client offers http/1.1 first, so mitmproxy speaks HTTP/1 to it; the upstream
    picks HTTP/2 and sends trailers, which HTTP/1 cannot carry here: they are dropped."""
    for _ in range(2):
        sock, reply = connect(proxy.port, "localhost", world.h2.port, basic("agent", agent))
        assert reply.status == 200
        context = ssl.create_default_context(cafile=str(proxy.ca))
        context.set_alpn_protocols(["http/1.1", "h2"])
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
            tls.settimeout(20)
            marker = _unique()
            tls.sendall(f"GET /grpc/{marker} HTTP/1.1\r\nHost: localhost:{world.h2.port}\r\n\r\n".encode())
            reply = read_reply(tls)
        assert reply.status == 200 and b"frank@example.com" in reply.body, reply
        assert f"/grpc/{marker}" in world.h2.paths  # it did go over HTTP/2
    assert "has crashed" not in proxy.tail()
