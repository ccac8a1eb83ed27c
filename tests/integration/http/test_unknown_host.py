"""A request to a host no connection declares: the answer and the audit name what was asked for."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry
from tests.integration.postgres.conftest import wait_for


def test_the_refusal_names_the_host_and_port_no_connection_declares(proxy, world, agent):
    cases = {
        f"https://127.0.0.1:{world.plain.port}/echo/undeclared": f"127.0.0.1:{world.plain.port}",
        "https://localhost/echo/default-port": "localhost:443",
        f"http://example.invalid:8081/echo/{uuid.uuid4().hex}": "example.invalid:8081",
    }
    with proxy.requests(agent) as s:
        for url, where in cases.items():
            r = s.get(url)
            assert r.status_code == 403, url
            body = r.json()
            assert body["rule"] == "no-grant"
            assert f"no connection declares {where}," in body["message"], body["message"]
            assert "connection ''" not in body["message"]


def test_http_session_open_names_the_host_not_an_empty_connection(proxy, world, agent):
    with session_scope() as s:
        last = s.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) or 0
    with proxy.requests(agent) as s:
        assert s.get("https://nowhere-declared.invalid/x").status_code == 403

    def opened():
        with session_scope() as s:
            return [e.data for e in s.scalars(select(AuditEntry).where(AuditEntry.seq > last,
                                                                       AuditEntry.action == "session.open"))]

    def mine():
        return [d for d in opened() if d.get("host") == "nowhere-declared.invalid:443"]

    assert wait_for(mine, timeout=10), opened()
    assert all("connection" not in d or d["connection"] for d in opened()), opened()
