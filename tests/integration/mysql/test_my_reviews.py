"""Statements that need a review through the MySQL relay: held, decided by another process
(as the portal or the Slack bot would), woken through the store's bus."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pymysql
import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import Review

from .conftest import ROOT, connect, wait_for

pytestmark = pytest.mark.timeout(120)

VOTE = """
import sys
from app.approvals import vote
from app.db import session_scope
with session_scope() as s:
    vote(s, int(sys.argv[1]), voter_email="dba@example.com", decision=sys.argv[2], reason=sys.argv[3])
"""


def vote_elsewhere(env, review_id: int, decision: str, reason: str = "checked by the test") -> None:
    subprocess.run([sys.executable, "-c", VOTE, str(review_id), decision, reason], cwd=ROOT, env=env, check=True,
                   timeout=60)


def pending(operation: str) -> Review | None:
    with session_scope() as s:
        return s.scalars(select(Review).where(Review.protocol == "mysql", Review.operation == operation,
                                              Review.status == "pending")).first()


def held(relay, world, sql: str, decision: str | None, reason: str = "checked by the test", params=None):
    """Run `sql` through the relay; another process votes once the review exists.
    Returns (cursor or exception, review)."""
    found: list[Review] = []

    def voter() -> None:
        review = wait_for(lambda: pending(sql), timeout=20)
        if review is not None:
            found.append(review)
            if decision is not None:
                vote_elsewhere(relay.env, review.id, decision, reason)

    thread = threading.Thread(target=voter)
    thread.start()
    conn = connect(relay, world.tokens["agent"])
    try:
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
            result = cur
        except pymysql.err.MySQLError as exc:
            result = exc
    finally:
        thread.join()
    return conn, result, (found[0] if found else None)


def count(world, sql: str) -> int:
    with world.target.admin() as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def test_held_then_approved_from_another_process(relay, world):
    started = time.monotonic()
    conn, cur, review = held(relay, world, "DELETE FROM orders WHERE id = 1", "approve")
    assert review is not None and not isinstance(cur, Exception), cur
    assert cur.rowcount == 1
    assert time.monotonic() - started < 25  # woken by the vote, not by the 30 s hold running out
    assert count(world, "SELECT COUNT(*) FROM orders WHERE id = 1") == 0
    conn.close()


def test_rejected_names_the_review_and_the_reason(relay, world):
    conn, err, review = held(relay, world, "DELETE FROM orders WHERE id = 2", "reject", "not on a Friday")
    assert isinstance(err, pymysql.err.OperationalError) and err.args[0] == 1142
    assert f"review {review.id}" in err.args[1] and "rejected" in err.args[1] and "not on a Friday" in err.args[1]
    assert count(world, "SELECT COUNT(*) FROM orders WHERE id = 2") == 1
    conn.close()


def test_still_pending_names_the_review(relay, world):
    conn, err, review = held(relay, world, "INSERT INTO refunds VALUES (7)", None)
    assert isinstance(err, pymysql.err.OperationalError) and err.args[0] == 1142
    assert f"review {review.id}" in err.args[1] and "pending" in err.args[1] and "/reviews/" in err.args[1]
    assert count(world, "SELECT COUNT(*) FROM refunds WHERE id = 7") == 0
    conn.close()


def test_client_that_leaves_while_held_withdraws(relay, world):
    sql = "DELETE FROM orders WHERE id = 3"
    conn = connect(relay, world.tokens["agent"])
    sock: socket.socket = conn._sock

    def run() -> None:
        try:
            conn.cursor().execute(sql)
        except Exception:  # noqa: BLE001 - the socket is shut under it
            pass

    thread = threading.Thread(target=run)
    thread.start()
    review = wait_for(lambda: pending(sql), timeout=20)
    assert review is not None
    sock.shutdown(socket.SHUT_RDWR)
    thread.join(10)
    with session_scope() as s:
        gone = wait_for(lambda: s.get(Review, review.id, populate_existing=True).requester_gone_at, timeout=15)
    assert gone is not None
    vote_elsewhere(relay.env, review.id, "approve")  # approved after the fact: nothing may run
    # The positive signal first: a statement held after that approval, and approved after
    # it, has run; one still waiting on the first approval would have woken to it sooner.
    later, cur, _ = held(relay, world, "INSERT INTO orders VALUES (103, 'approved later')", "approve")
    later.close()
    assert not isinstance(cur, Exception) and cur.rowcount == 1, cur
    assert count(world, "SELECT COUNT(*) FROM orders WHERE id = 3") == 1
