"""Issue 16, findings 10-15: the proxy reads each request as the upstream will, refuses
what the two could read differently, bounds what it holds, and keeps injected
credentials out of every response form. Real proxy, real upstreams, raw sockets."""
from __future__ import annotations

import uuid

from tests.integration.http.rawhttp import send_plain, send_tunnel


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
