"""A statement held for review when its grant is revoked never runs through the MySQL
relay, even if a DBA approves it right after the revoke: the relay's holds share the
gate's path (issue 23), which fails closed.

What the client reads is not asserted here: the gate refuses the hold naming the
revocation, but the relay's own grant watcher may end the session first, and the MySQL
session's goodbye (an error with sequence number 0 in the middle of a command) then
reaches pymysql as 2013 "Lost connection". That is the MySQL adapter's to fix
(app/relay/mysql/session.py grant_gone), reported with issue 23."""
from __future__ import annotations

import threading
import uuid

import pymysql
import pytest
from sqlalchemy import select

from app import changes
from app.approvals import vote
from app.db import session_scope
from app.models import Grant, Review, ServiceAccount
from tests.integration.campaigns.live import add_account

from .conftest import connect, wait_for

pytestmark = pytest.mark.timeout(120)


def test_a_held_statement_approved_after_the_revoke_never_runs(relay, world):
    sa, token = add_account("app")
    marker = f"revoked-{uuid.uuid4().hex[:8]}"
    sql = f"UPDATE orders SET item = '{marker}' WHERE id = 2"  # orders-need-a-dba: held up to 30 s
    conn = connect(relay, token, user=sa)
    outcome: dict = {}

    def run() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
            outcome["ran"] = True
        except pymysql.err.MySQLError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        def review_of_sa():
            with session_scope() as s:
                return s.scalars(select(Review.id).where(Review.service_account == sa)).first()

        review_id = wait_for(review_of_sa, timeout=20)
        assert review_id is not None, "the statement was not held"
        with session_scope() as s:
            grant_id = s.scalars(select(Grant.id).join(ServiceAccount, Grant.service_account_id == ServiceAccount.id)
                                 .where(ServiceAccount.name == sa)).one()
            changes.revoke_grant(s, "test", grant_id)
        with session_scope() as s:  # approved at once, as by a DBA who had the review open
            vote(s, review_id, voter_email="dba@example.com", decision="approve", reason="fine")
        worker.join(20)
        assert not worker.is_alive(), "the held statement was neither refused nor ended"
    finally:
        conn.close()
    assert "ran" not in outcome and isinstance(outcome.get("error"), pymysql.err.MySQLError), outcome
    with world.target.admin() as admin, admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM orders WHERE item = %s", (marker,))
        assert cur.fetchone()[0] == 0
    with session_scope() as s:
        assert s.get(Review, review_id).consumed_at is None  # approved, never used
