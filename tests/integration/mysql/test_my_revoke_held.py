"""A statement held for review when its grant is revoked never runs through the MySQL
relay, even if a DBA approves it right after the revoke: the relay's holds share the
gate's path (issue 23), which fails closed. The client reads the gate's refusal naming
the revocation as the answer to its statement, not a lost connection: the relay's grant
watcher lets a statement being decided be answered before it ends the session."""
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
    code, message = outcome["error"].args[0], str(outcome["error"].args[-1])
    assert code != 2013 and "revoked" in message, outcome  # the gate's reason, in order
    with world.target.admin() as admin, admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM orders WHERE item = %s", (marker,))
        assert cur.fetchone()[0] == 0
    with session_scope() as s:
        assert s.get(Review, review_id).consumed_at is None  # approved, never used
