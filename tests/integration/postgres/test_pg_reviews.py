"""Statements that need a review: a NOTICE at once with the review URL, then a hold.

The vote is cast by another process (`python -c ... app.approvals.vote`), as the
portal or the Slack bot would; the relay is woken through the store's bus.
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from psycopg import errors

from .conftest import ROOT, dsn, target_rows

VOTE = """
import sys
from app.approvals import vote
from app.db import session_scope
with session_scope() as s:
    vote(s, int(sys.argv[1]), voter_email="dba@example.com", decision=sys.argv[2], reason="checked by the test")
"""


def vote_elsewhere(env: dict[str, str], review_id: int, decision: str) -> None:
    subprocess.run([sys.executable, "-c", VOTE, str(review_id), decision], cwd=ROOT, env=env, check=True,
                   timeout=60)


class Held:
    """Runs `sql` on a connection that records notices; votes once the NOTICE names a review."""

    def __init__(self, relay, token: str, decision: str | None):
        self.relay, self.decision = relay, decision
        self.notices: list[str] = []
        self.noticed = threading.Event()
        self.conn = psycopg.connect(dsn(relay, token), autocommit=True)
        self.conn.add_notice_handler(self._notice)

    def _notice(self, diag) -> None:
        self.notices.append(f"{diag.message_primary} {diag.message_detail or ''}")
        self.noticed.set()

    def review_id(self) -> int:
        return int(re.search(r"/reviews/(\d+)", self.notices[0]).group(1))

    def run(self, sql: str):
        voter = None
        if self.decision is not None:
            def vote() -> None:
                if self.noticed.wait(20):
                    vote_elsewhere(self.relay.env, self.review_id(), self.decision)
            voter = threading.Thread(target=vote)
            voter.start()
        try:
            return self.conn.execute(sql)
        finally:
            if voter is not None:
                voter.join()


def test_held_then_approved_from_another_process(relay, agent, world):
    held = Held(relay, agent, "approve")
    started = time.monotonic()
    cur = held.run("DELETE FROM orders WHERE id = 1")
    assert cur.rowcount == 1
    assert time.monotonic() - started < 25  # woken by the vote, not by the 30 s hold running out
    assert "needs approval" in held.notices[0] and "http://portal.test/reviews/" in held.notices[0]
    assert target_rows(world.target, "SELECT count(*) FROM orders WHERE id = 1") == [(0,)]
    held.conn.close()


def test_rejected_review_is_42501_naming_the_review(relay, agent, world):
    held = Held(relay, agent, "reject")
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        held.run("DELETE FROM orders WHERE id = 2")
    review = held.review_id()
    assert f"review {review} was rejected" in str(exc.value)
    assert target_rows(world.target, "SELECT count(*) FROM orders WHERE id = 2") == [(1,)]
    # The connection is usable afterwards.
    assert held.conn.execute("SELECT count(*) FROM orders WHERE id = 2").fetchone() == (1,)
    held.conn.close()


def test_still_pending_after_the_hold(relay, agent, world):
    held = Held(relay, agent, None)  # nobody votes; the rule holds for 1 s
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        held.run("DELETE FROM refunds")
    review = held.review_id()
    assert f"review {review} is still pending" in str(exc.value)
    assert exc.value.diag.message_hint and "retry" in exc.value.diag.message_hint
    assert target_rows(world.target, "SELECT count(*) FROM refunds") == [(1,)]
    held.conn.close()


def test_hold_in_the_extended_protocol_then_approved(relay, agent, world):
    held = Held(relay, agent, "approve")
    held.conn.prepare_threshold = 0
    cur = held.conn.execute("SELECT 1")  # the session works before
    assert cur.fetchone() == (1,)
    voter = threading.Thread(target=lambda: held.noticed.wait(20) and vote_elsewhere(
        relay.env, held.review_id(), "approve"))
    voter.start()
    cur = held.conn.execute("DELETE FROM orders WHERE id = %s", (3,))
    voter.join()
    assert cur.rowcount == 1
    assert target_rows(world.target, "SELECT count(*) FROM orders WHERE id = 3") == [(0,)]
    held.conn.close()


def test_the_agents_reason_reaches_the_review(relay, agent, world):
    from app.db import session_scope
    from app.models import Review

    held = Held(relay, agent, "approve")
    held.conn.execute("SET airlock.reason = 'removing the duplicate order, ticket OPS-17'")
    assert held.run("DELETE FROM orders WHERE id = 5").rowcount == 1
    with session_scope() as s:
        review = s.get(Review, held.review_id())
        assert review.details["justification"] == "removing the duplicate order, ticket OPS-17"
    held.conn.close()


def test_an_application_name_suffix_is_the_reason_and_the_prefix_the_run(relay, agent, world):
    from app.db import session_scope
    from app.models import Review

    held = Held(relay, agent, "approve")
    held.conn.execute("SET application_name = 'run-42 | nightly cleanup of test rows'")
    assert held.run("DELETE FROM orders WHERE id = 6").rowcount == 1
    with session_scope() as s:
        review = s.get(Review, held.review_id())
        assert review.details["justification"] == "nightly cleanup of test rows"
        assert review.run_id == "run-42"
    held.conn.close()
