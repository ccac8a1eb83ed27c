"""The store failing under airlock, on the real PostgreSQL behind a TCP proxy we can stall
or make refuse: every operation is refused within a bounded time, nothing is let through,
and nothing already recorded is lost."""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from app import audit, db
from app.config import settings
from app.db import session_scope
from app.deadlines import GRACE
from app.gate import Gate, Unavailable
from app.identity import issue_token
from app.inventory import apply_policy
from app.models import AuditEntry, Review
from app.policy import load_policy
from app.types import Operation
from tests.stallproxy import StallProxy

POLICY = (Path(__file__).parent.parent / "data" / "policy.yaml").read_text()
ENV = {"BILLING_TOKEN": "bill-secret", "ORDERS_DB_PASSWORD": "pw"}
STATEMENT_TIMEOUT = 1.0
CONNECT_TIMEOUT = 2.0  # libpq's smallest
# From the moment the store stops answering to a refusal: the statement deadline plus its
# grace on the pooled connection, a connect timeout for its replacement, plus scheduling
# slack on a busy two-core machine.
BOUND = STATEMENT_TIMEOUT + GRACE + CONNECT_TIMEOUT + 1.5


@pytest.fixture
def proxy(pg_store, monkeypatch):
    with StallProxy(("127.0.0.1", 5432)) as p:
        monkeypatch.setenv("AIRLOCK_DATABASE_URL", pg_store.replace("127.0.0.1:5432", f"127.0.0.1:{p.port}"))
        monkeypatch.setenv("AIRLOCK_STORE_STATEMENT_TIMEOUT", str(STATEMENT_TIMEOUT))
        monkeypatch.setenv("AIRLOCK_STORE_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT))
        settings.cache_clear()
        db.reset_engines()
        yield p
        p.heal()
        db.reset_engines()


@pytest.fixture
def token(proxy):
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY), actor="test", environ=ENV)
        return issue_token(s, "etl-agent", timedelta(hours=1)).token


def op(sql="select * from orders", kind="read"):
    return Operation(protocol="postgres", connection="orders-db", kind=kind, text=sql, fingerprint=sql)


def timed(fn):
    start = time.monotonic()
    try:
        return fn(), time.monotonic() - start
    except Exception as exc:
        return exc, time.monotonic() - start


def count_audit() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count(AuditEntry.seq)))


@pytest.mark.parametrize("fault", ["stall", "refuse"])
def test_a_failing_store_fails_each_call_within_the_bound_and_then_recovers(proxy, fault):
    with session_scope() as s:
        assert s.scalar(text("SELECT 1")) == 1  # a pooled connection, open before the fault
    getattr(proxy, fault)()
    for attempt in range(3):  # the pooled connection, then new ones
        result, took = timed(lambda: session_scope().__enter__().scalar(text("SELECT 1")))
        assert isinstance(result, SQLAlchemyError), result
        assert took < BOUND, (attempt, took)
    proxy.heal()
    with session_scope() as s:
        assert s.scalar(text("SELECT 1")) == 1


@pytest.mark.parametrize("fault", ["stall", "refuse"])
def test_the_gate_refuses_everything_while_the_store_fails(token, proxy, fault):
    async def main():
        gate = Gate(version_ttl=0.1)
        who = await gate.authenticate(token, claimed="etl-agent")
        assert (await gate.decide(who, op())).action == "allow"
        getattr(proxy, fault)()
        await asyncio.sleep(0.2)  # past the version check interval: the gate must ask the store
        start = time.monotonic()
        verdict = await gate.decide(who, op())
        assert (verdict.action, verdict.status) == ("deny", "error"), verdict
        with pytest.raises(Unavailable):
            await gate.authenticate(token, claimed="etl-agent")
        assert time.monotonic() - start < 2 * BOUND
        proxy.heal()
        assert (await gate.decide(who, op())).action == "allow"

    asyncio.run(main())


def test_a_store_failure_during_a_hold_keeps_the_review_id(token, proxy):
    async def main():
        gate = Gate()
        who = await gate.authenticate(token, claimed="etl-agent")
        held: list[int] = []

        def on_hold(review_id, url):
            held.append(review_id)
            proxy.refuse()  # the store goes away while the operation waits for a decision

        verdict = await gate.decide(who, op("update orders set x = 1 where id = 2", kind="write"), hold=5,
                                    on_hold=on_hold)
        return held, verdict

    held, verdict = asyncio.run(main())
    assert held and verdict.action == "deny" and verdict.status == "error"
    assert verdict.review_id == held[0] and verdict.review_url and verdict.retry_after
    assert f"review {held[0]}" in verdict.message
    proxy.heal()
    with session_scope() as s:
        assert s.get(Review, held[0]).status == "pending"  # still there to be decided and retried


def test_audit_entries_written_before_a_stall_survive_it_and_the_chain_verifies(proxy):
    with session_scope() as s:
        for i in range(3):
            audit.append(s, actor="test", action="test.entry", target=str(i))
    proxy.stall()
    result, took = timed(lambda: _append_one())
    assert isinstance(result, SQLAlchemyError) and took < BOUND
    proxy.heal()
    assert count_audit() == 3
    with session_scope() as s:
        assert audit.verify(s).ok


def _append_one() -> None:
    with session_scope() as s:
        audit.append(s, actor="test", action="test.entry", target="during the stall")


@pytest.fixture
def portal(proxy):
    from app.models import User
    from app.portal import create_app
    from app.portal.security import new_api_token
    from app.recording import reset_recorder
    from tests.integration.portal.scenario import seed_scenario

    reset_recorder()
    seed_scenario()
    with session_scope() as s:
        user = s.scalar(select(User).where(User.email == "admin@example.com"))
        token, user.api_token_hash = new_api_token()
    client = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False}).test_client()
    from tests.integration.portal.scenario import PASSWORD

    assert client.post("/login", data={"email": "admin@example.com", "password": PASSWORD}).status_code == 302
    yield client, {"Authorization": f"Bearer {token}"}
    reset_recorder()


@pytest.mark.parametrize("fault", ["stall", "refuse"])
def test_the_portal_answers_503_with_a_clear_body_while_the_store_fails(portal, proxy, fault):
    client, auth = portal
    assert client.get("/api/v1/reviews", headers=auth).status_code == 200
    getattr(proxy, fault)()
    for path in ("/api/v1/reviews", "/api/v1/me"):
        (resp, took) = timed(lambda: client.get(path, headers=auth))
        assert resp.status_code == 503 and took < BOUND, (path, resp.status_code, took)
        body = resp.get_json()
        assert body["error"] == "store_unavailable" and "store is unavailable" in body["message"]
        assert resp.headers["Retry-After"]
    page = client.get("/reviews")  # a logged-in page: loading the user needs the store
    assert page.status_code == 503 and b"store is unavailable" in page.data
    proxy.heal()
    assert client.get("/api/v1/reviews", headers=auth).status_code == 200


def test_sqlite_a_writer_that_never_lets_go_is_refused_after_the_busy_timeout(sqlite_store, monkeypatch):
    import sqlite3

    monkeypatch.setenv("AIRLOCK_STORE_STATEMENT_TIMEOUT", "1")
    settings.cache_clear()
    db.reset_engines()
    with session_scope() as s:
        audit.append(s, actor="test", action="test.entry", target="before")
    hog = sqlite3.connect(sqlite_store.split("///", 1)[1], isolation_level=None)
    hog.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        result, took = timed(_append_one)
        assert isinstance(result, SQLAlchemyError) and "locked" in str(result), result
        assert 0.8 < took < 3.0, took
    finally:
        hog.execute("ROLLBACK")
        hog.close()
    assert count_audit() == 1
    _append_one()
    with session_scope() as s:
        assert audit.verify(s).ok and count_audit() == 2
