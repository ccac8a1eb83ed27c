"""Credential injection: the upstream gets the connection's credentials, the runtime's own
are dropped, and the runtime never sees the injected values, even when echoed back."""
from __future__ import annotations

import uuid

from tests.integration.http.conftest import UPSTREAM_KEY, UPSTREAM_TOKEN


def test_injected_headers_reach_the_upstream_and_replace_the_runtimes_own(proxy, world, agent, api):
    path = f"/echo/inject-{uuid.uuid4().hex[:8]}"
    with proxy.requests(agent) as s:
        r = s.get(f"{api}{path}", headers={"Authorization": "Bearer runtime-chose-this", "x-api-key": "mine"})
    assert r.status_code == 200
    (seen,) = world.upstream.requests_to(path)
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert seen["headers"]["x-api-key"] == UPSTREAM_KEY
    assert "runtime-chose-this" not in repr(seen) and "mine" not in seen["headers"].values()


def test_the_runtime_never_sees_an_injected_credential(proxy, world, agent, api):
    """The echo endpoint reflects every request header: the values come back scrubbed."""
    path = f"/echo/leak-{uuid.uuid4().hex[:8]}"
    outputs = []
    with proxy.requests(agent) as s:
        outputs.append(s.get(f"{api}{path}").text)
    with proxy.httpx(agent) as c:
        outputs.append(c.post(f"{api}{path}", json={"x": 1}).text)
    outputs.append(proxy.curl(agent, f"{api}{path}").stdout)
    assert len(world.upstream.requests_to(path)) == 3
    for text in outputs:
        assert UPSTREAM_TOKEN not in text and UPSTREAM_KEY not in text
        assert "[REDACTED:credential]" in text


def test_plain_connections_get_nothing_injected(proxy, world, agent):
    import requests

    path = f"/echo/plain-inject-{uuid.uuid4().hex[:8]}"
    r = requests.get(f"http://localhost:{world.plain.port}{path}", headers={"Authorization": "Bearer own"},
                     proxies={"http": proxy.url("agent", agent)}, timeout=30)
    assert r.status_code == 200
    (seen,) = world.plain.requests_to(path)
    assert seen["headers"]["authorization"] == "Bearer own"  # no inject: the runtime's header passes
