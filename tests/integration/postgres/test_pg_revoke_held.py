"""A statement held for review when its grant is revoked never runs, even if a DBA
approves it right after the revoke: the relay's holds share the gate's path (issue 23).
The client gets an error naming the revocation, never a bare disconnect."""
from __future__ import annotations

import threading

import psycopg
from sqlalchemy import select

from app import changes
from app.approvals import vote
from app.db import session_scope
from app.models import Grant, Review, ServiceAccount
from tests.integration.campaigns.live import add_account

from .conftest import dsn, target_rows


def test_a_held_statement_approved_after_the_revoke_never_runs(relay, world):
    sa, token = add_account("app")
    conn = psycopg.connect(dsn(relay, token, user=sa), autocommit=True)
    noticed, notices = threading.Event(), []
    conn.add_notice_handler(lambda diag: (notices.append(diag.message_primary), noticed.set()))
    outcome: dict = {}

    def run() -> None:
        try:
            conn.execute("DELETE FROM orders WHERE id = 47")  # deletes-need-a-dba: held up to 30 s
            outcome["ran"] = True
        except psycopg.Error as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert noticed.wait(20), "the statement was not held"
        with session_scope() as s:
            review_id = s.scalars(select(Review.id).where(Review.service_account == sa)).one()
            grant_id = s.scalars(select(Grant.id).join(ServiceAccount, Grant.service_account_id == ServiceAccount.id)
                                 .where(ServiceAccount.name == sa)).one()
        with session_scope() as s:
            changes.revoke_grant(s, "test", grant_id)
        with session_scope() as s:  # approved at once, as by a DBA who had the review open
            vote(s, review_id, voter_email="dba@example.com", decision="approve", reason="fine")
        worker.join(20)
        assert not worker.is_alive(), "the held statement was neither refused nor ended"
    finally:
        conn.close()
    assert "ran" not in outcome
    message = str(outcome["error"])
    # The gate's refusal or the session's end, whichever came first: both name the revocation.
    assert ("has no grant for connection 'app': it was revoked at" in message and f"held for review {review_id} "
            in message) or "was revoked or has expired; the session is closed" in message, message
    assert target_rows(world.target, "SELECT count(*) FROM orders WHERE id = 47") == [(1,)]
    with session_scope() as s:
        assert s.get(Review, review_id).consumed_at is None  # approved, never used
