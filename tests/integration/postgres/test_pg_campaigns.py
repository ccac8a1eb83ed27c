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
