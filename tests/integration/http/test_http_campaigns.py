"""Access reviews over the real proxy: usage from recorded HTTP sessions, a revoke refusing the next request."""
from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from app.campaigns import decisions, runs
from app.db import session_scope
from app.models import RecordedSession, SessionEvent
from tests.integration.campaigns.live import add_account, add_campaign


def _decisions_written(sa: str, n: int) -> bool:
    with session_scope() as s:
        rows = s.scalars(select(SessionEvent.id).join(RecordedSession, RecordedSession.id == SessionEvent.session_id)
                         .where(RecordedSession.service_account == sa, SessionEvent.kind == "decision")).all()
        return len(rows) >= n


def _wait(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_usage_from_proxy_sessions_and_a_revoke_refusing_the_next_request(proxy, world, api):
    sa, token = add_account("api")
    path = f"/echo/campaign-{uuid.uuid4().hex[:8]}"
    with proxy.httpx(token, user=sa) as c:
        assert c.get(f"{api}{path}").status_code == 200
        assert c.get(f"{api}{path}?again=1").status_code == 200
        assert c.post(f"{api}{path}", json={"x": 1}).status_code == 200
        assert c.delete(f"{api}{path}").status_code == 403  # no-delete: a denial, not use
    assert _wait(lambda: _decisions_written(sa, 4))
    name = add_campaign("api", sa, reviewers="group:approvers")
    with session_scope() as s:
        item = runs.start_by_name(s, name, actor="approver@example.com").items[0]
        assert item.usage["ops"] == {"GET": 2, "POST": 1} and item.usage["denials"] == 1
        assert item.suggestion == "keep" and item.reviewer == "group:approvers"
        item_id = item.id

    with proxy.httpx(token, user=sa) as c:
        assert c.get(f"{api}{path}").status_code == 200
        served = len(world.upstream.requests_to(path))
        with session_scope() as s:
            decisions.decide(s, item_id, "revoke", "approver@example.com")
        revoked = time.monotonic()
        status = 200
        while status == 200 and time.monotonic() - revoked < 3:
            status = c.get(f"{api}{path}").status_code  # the same keep-alive tunnel
            if status == 200:
                served += 1
                time.sleep(0.05)
        assert status == 403 and time.monotonic() - revoked < 1.5
        body = c.get(f"{api}{path}").json()
        assert body["error"] == "denied" and "no grant" in body["message"]
    assert len(world.upstream.requests_to(path)) == served


def test_a_revoke_closes_an_idle_tunnel(proxy, world, api):
    sa, token = add_account("api")
    name = add_campaign("api", sa, reviewers="group:approvers")
    path = f"/echo/tunnel-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        item_id = runs.start_by_name(s, name, actor="approver@example.com").items[0].id
    with proxy.httpx(token, user=sa) as c:  # the proxy's gate has seen the new grant
        assert _wait(lambda: c.get(f"{api}{path}").status_code == 200, timeout=5)
    import socket
    import ssl

    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    import base64

    auth = base64.b64encode(f"{sa}:{token}".encode()).decode()
    host = f"localhost:{world.upstream.port}"
    raw.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    assert b" 200 " in raw.recv(4096)
    tls = ssl.create_default_context(cafile=str(proxy.ca)).wrap_socket(raw, server_hostname="localhost")
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert _read_response(tls).startswith(b"HTTP/1.1 200")  # an allowed request: the tunnel is in use
    with session_scope() as s:
        decisions.decide(s, item_id, "revoke", "approver@example.com")
    revoked = time.monotonic()
    tls.settimeout(5)
    try:
        closed = tls.recv(65536) == b""  # the proxy closed the idle tunnel
    except (ConnectionError, ssl.SSLError):
        closed = True
    assert closed and time.monotonic() - revoked < 1.5
    tls.close()


def _read_response(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body
