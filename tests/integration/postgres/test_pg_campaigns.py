"""Access reviews over the real relay: usage from recorded sessions, a revoke ending an open session."""
from __future__ import annotations

import select as _select
import time

import psycopg
import pytest
from sqlalchemy import select

from app.campaigns import decisions, runs
from app.db import session_scope
from app.models import CampaignItem, RecordedSession, SessionEvent
from tests.integration.campaigns.live import add_account, add_campaign
from tests.integration.postgres.conftest import dsn, wait_for


def _events_written(sa: str, n: int) -> bool:
    with session_scope() as s:
        return s.scalar(select(SessionEvent.id).join(RecordedSession, RecordedSession.id == SessionEvent.session_id)
                        .where(RecordedSession.service_account == sa).offset(n - 1).limit(1)) is not None


def test_usage_from_relay_sessions_and_a_revoke_ending_an_open_session(relay, world):
    sa, token = add_account("app")
    with psycopg.connect(dsn(relay, token, user=sa), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.execute("select count(*) from t").fetchone() == (2,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("drop table t")  # denied by no-schema-changes: a denial, not use
    assert wait_for(lambda: _events_written(sa, 3))
    name = add_campaign("app", sa)
    with session_scope() as s:
        run = runs.start_by_name(s, name, actor="dba@example.com")
        item = run.items[0]
        assert item.usage["ops"] == {"read": 2} and item.usage["denials"] == 1 and item.usage["sessions"] == 1
        assert item.usage["last_used"] is not None
        assert item.suggestion == "narrow" and item.reviewer == "dba@example.com"
        item_id = item.id

    conn = psycopg.connect(dsn(relay, token, user=sa), autocommit=True)
    try:
        assert conn.execute("select 1").fetchone() == (1,)
        with session_scope() as s:
            decisions.decide(s, item_id, "revoke", "dba@example.com")
        revoked = time.monotonic()
        # The idle session is ended by the relay: the socket turns readable (FATAL, then EOF).
        readable, _, _ = _select.select([conn.fileno()], [], [], 3.0)
        elapsed = time.monotonic() - revoked
        assert readable and elapsed < 1.5, f"session still open {elapsed:.2f}s after the revoke"
        with pytest.raises(psycopg.Error, match="revoked or has expired; the session is closed"):
            conn.execute("select 1")
        assert conn.broken or conn.closed  # a FATAL: the connection is gone, not just one statement refused
    finally:
        conn.close()
    with psycopg.connect(dsn(relay, token, user=sa), autocommit=True) as again:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="has no grant"):
            again.execute("select 1")
    with session_scope() as s:
        assert s.get(CampaignItem, item_id).status == "revoked"


def test_jit_request_approve_access_expiry_denied(relay, world):
    from datetime import timedelta

    from app import approvals
    from app.campaigns import jobs, requests
    from app.campaigns.runs import CampaignError
    from app.models import AccessRequest, Grant, utcnow
    from tests.integration.campaigns.live import add_account as _add

    sa, token = _add("app", prefix="jit")
    with session_scope() as s:  # start without access: the grant add_account made goes
        decisions.take_grant(s, s.scalars(select(Grant.id).join(Grant.service_account)
                                          .where(Grant.service_account.has(name=sa))).one(),
                             actor="test", reason="start without access", now=utcnow())
    with psycopg.connect(dsn(relay, token, user=sa), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="has no grant"):
            conn.execute("select 1")
    with session_scope() as s:
        req = requests.create(s, service_account=sa, connection="app", duration=timedelta(hours=2),
                              reason="incident 4711", requested_by="oncall@example.com")
        req_id, review_id = req.id, req.review_id
    with session_scope() as s:  # the requester may not approve their own request
        with pytest.raises(approvals.VoteError, match="requester cannot vote"):
            approvals.vote(s, review_id, voter_email="oncall@example.com", decision="approve")
    with session_scope() as s:
        approvals.vote(s, review_id, voter_email="dba@example.com", decision="approve")
    jobs.access_requests_tick()
    with session_scope() as s:
        req = s.get(AccessRequest, req_id)
        assert req.status == "approved" and req.decided_by == "dba@example.com"
        grant = s.get(Grant, req.grant_id)
        assert grant.source == "request" and grant.expires_at == req.access_until
        until, req_grant = req.access_until, req.grant_id
        with pytest.raises(CampaignError, match="already has access"):
            requests.create(s, service_account=sa, connection="app", duration=timedelta(hours=1), reason="more",
                            requested_by="oncall@example.com")
    conn = psycopg.connect(dsn(relay, token, user=sa), autocommit=True)
    try:
        assert wait_for(lambda: _ok(conn), timeout=3)  # the relay sees the grant within a second
        # The scheduler's housekeeping at expiry (its grant step only: this suite's store is
        # shared, and the token step at +2 h would also retire the other tests' tokens).
        from app.campaigns import housekeeping

        with session_scope() as s:
            assert housekeeping.expire_grants(s, until) == [req_grant]
        readable, _, _ = _select.select([conn.fileno()], [], [], 3.0)
        assert readable
        with pytest.raises(psycopg.Error, match="revoked or has expired"):
            conn.execute("select 1")
    finally:
        conn.close()
    with psycopg.connect(dsn(relay, token, user=sa), autocommit=True) as again:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="has no grant"):
            again.execute("select 1")


def _ok(conn) -> bool:
    try:
        return conn.execute("select 1").fetchone() == (1,)
    except psycopg.errors.InsufficientPrivilege:
        return False


def test_a_login_without_a_grant_is_recorded_as_a_refused_login_not_a_set(relay, world):
    from app.models import Grant, utcnow

    sa, token = add_account("app", prefix="nogrant")
    with session_scope() as s:
        decisions.take_grant(s, s.scalars(select(Grant.id).where(Grant.service_account.has(name=sa))).one(),
                             actor="test", reason="start without access", now=utcnow())
    # A startup setting makes the relay decide at login: without a grant that is a refused login.
    with pytest.raises(psycopg.OperationalError, match="login refused"):
        psycopg.connect(dsn(relay, token, user=sa, options="-csearch_path=public"))

    def decisions_of_sa() -> list[str]:
        with session_scope() as s:
            ids = s.scalars(select(RecordedSession.id).where(RecordedSession.service_account == sa)).all()
            return list(s.scalars(select(SessionEvent.data).where(SessionEvent.session_id.in_(ids),
                                                                  SessionEvent.kind == "decision")))

    events = wait_for(lambda: decisions_of_sa() or None, timeout=10)
    assert len(events) == 1 and '"kind":"login"' in events[0].replace(" ", "") and "SET" not in events[0], events
