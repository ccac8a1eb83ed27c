"""Proxy authentication: 407 before any tunnel, Basic and Bearer, per-connection identity,
revocation of a live tunnel, and credentials that never reach the upstream."""
from __future__ import annotations

import time
import uuid

import httpx
import pytest
import requests
from sqlalchemy import select

from app.db import session_scope
from app.identity import revoke_token
from app.models import Token

from tests.integration.http.clients import basic, connect, raw_request, tunnel_tls


def _unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.mark.parametrize("auth", [None, "Basic !!!", basic("agent", "alk_not-a-real-token-at-all-000000"),
                                  "Bearer alk_not-a-real-token-at-all-000000", "Digest abc"])
def test_connect_without_valid_credentials_gets_407_and_no_tunnel(proxy, world, auth):
    sock, reply = connect(proxy.port, "localhost", world.upstream.port, auth)
    try:
        assert reply.status == 407
        assert reply.headers["proxy-authenticate"].startswith("Basic")
        # No tunnel: the proxy closes or refuses anything further on this socket.
        sock.sendall(b"GET /echo/after-407 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        time.sleep(0.2)
    finally:
        sock.close()
    assert world.upstream.requests_to("/echo/after-407") == []


def test_a_token_under_another_accounts_name_is_refused(proxy, world, api):
    intruder = world.tokens["intruder"]
    with proxy.requests(intruder, user="agent") as s, pytest.raises(requests.exceptions.ProxyError, match="407"):
        s.get(f"{api}/echo/claimed")


def test_curl_requests_and_httpx_all_get_407_without_credentials(proxy, world, api):
    path = f"/echo/no-cred-{_unique()}"
    out = proxy.curl(None, f"{api}{path}")
    assert "407" in out.stderr or out.stdout.endswith("407")
    with proxy.requests(None) as s, pytest.raises(requests.exceptions.ProxyError, match="407"):
        s.get(f"{api}{path}")
    with proxy.httpx(None) as c, pytest.raises(httpx.ProxyError, match="407"):
        c.get(f"{api}{path}")
    assert world.upstream.requests_to(path) == []


def test_plain_http_407_carries_the_json_body_and_challenge(proxy, world):
    r = requests.get(f"http://localhost:{world.plain.port}/echo/plain-407",
                     proxies={"http": proxy.url()}, timeout=30)
    assert r.status_code == 407
    assert r.headers["Proxy-Authenticate"] == 'Basic realm="airlock"'
    assert r.json()["error"] == "proxy_authentication_required"
    assert world.plain.requests_to("/echo/plain-407") == []


def test_basic_credentials_work_with_curl_requests_and_httpx(proxy, world, agent, api):
    path = f"/echo/basic-{_unique()}"
    out = proxy.curl(agent, f"{api}{path}")
    assert out.stdout.endswith("200"), out
    with proxy.requests(agent) as s:
        assert s.get(f"{api}{path}").status_code == 200
    with proxy.httpx(agent) as c:
        assert c.get(f"{api}{path}").status_code == 200
    assert len(world.upstream.requests_to(path)) == 3


def test_bearer_credentials_work(proxy, world, agent, api):
    path = f"/echo/bearer-{_unique()}"
    out = proxy.curl(None, "--proxy-header", f"Proxy-Authorization: Bearer {agent}", f"{api}{path}")
    assert out.stdout.endswith("200"), out
    tls = tunnel_tls(proxy.port, proxy.ca, "localhost", world.upstream.port, f"Bearer {agent}")
    with tls:
        reply = raw_request(tls, f"GET {path} HTTP/1.1", {"Host": f"localhost:{world.upstream.port}"})
    assert reply.status == 200
    assert len(world.upstream.requests_to(path)) == 2


def test_proxy_authorization_and_run_header_never_reach_the_upstream(proxy, world, agent, api):
    path = f"/echo/strip-{_unique()}"
    # Inside the tunnel a client may send them itself; they are stripped all the same.
    with tunnel_tls(proxy.port, proxy.ca, "localhost", world.upstream.port, basic("agent", agent)) as tls:
        reply = raw_request(tls, f"GET {path} HTTP/1.1", {
            "Host": f"localhost:{world.upstream.port}", "Proxy-Authorization": basic("agent", agent),
            "X-Airlock-Run": "run-1"})
    assert reply.status == 200
    # Plain HTTP carries Proxy-Authorization on every request.
    r = requests.get(f"http://localhost:{world.plain.port}{path}", headers={"X-Airlock-Run": "run-2"},
                     proxies={"http": proxy.url("agent", agent)}, timeout=30)
    assert r.status_code == 200
    for seen in world.upstream.requests_to(path) + world.plain.requests_to(path):
        assert "proxy-authorization" not in seen["headers"]
        assert "x-airlock-run" not in seen["headers"]
        assert agent not in repr(seen)
    assert len(world.upstream.requests_to(path)) == 1 and len(world.plain.requests_to(path)) == 1


def test_a_revoked_token_stops_working_inside_an_open_tunnel(proxy, world, api):
    token = world.tokens["revokee"]
    path = f"/echo/revoke-{_unique()}"
    with proxy.httpx(token, user="revokee") as c:
        assert c.get(f"{api}{path}").status_code == 200
        with session_scope() as s:
            revoke_token(s, world.token_ids["revokee"], by="test")
        deadline = time.monotonic() + 5
        status = 200
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            status = c.get(f"{api}{path}").status_code  # same keep-alive tunnel
        assert status == 407
    with session_scope() as s:
        assert s.scalar(select(Token.revoked_at).where(Token.id == world.token_ids["revokee"])) is not None
    served = len(world.upstream.requests_to(path))
    with proxy.httpx(token, user="revokee") as c, pytest.raises(httpx.ProxyError, match="407"):
        c.get(f"{api}{path}")
    assert len(world.upstream.requests_to(path)) == served


def test_a_refused_proxy_credential_is_an_audit_entry_without_the_token(proxy, world):
    from app.models import AuditEntry

    user = f"ghost-{_unique()}"
    bad = "alk_not-a-real-token-at-all-000000"
    sock, reply = connect(proxy.port, "localhost", world.upstream.port, basic(user, bad))
    sock.close()
    assert reply.status == 407
    deadline = time.monotonic() + 10
    entries: list = []
    while not entries and time.monotonic() < deadline:
        with session_scope() as s:
            entries = [e.data for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "auth.failed",
                                                                          AuditEntry.target == f"user:{user}"))]
        time.sleep(0.05)
    (entry,) = entries
    assert entry["protocol"] == "http" and entry["client"].startswith("127.0.0.1:")
    assert bad not in repr(entry)
