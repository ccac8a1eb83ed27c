"""An approval covers exactly the statement the approver saw (issue 16, findings 1-3),
through the relay against the real PostgreSQL: full text and bound parameters; a held
statement whose client leaves (killed psql, CancelRequest) is withdrawn and its approval
left unused; a rejection's reason arrives in the error's DETAIL.

`refunds` statements are held for 1 s (pending, then retried after the vote), `orders`
statements for 30 s (approved while held)."""
from __future__ import annotations

import os
import signal
import subprocess
import threading

import psycopg
import pytest
from psycopg import errors
from sqlalchemy import select

from app.approvals import vote
from app.db import session_scope
from app.models import AuditEntry, Review

from .conftest import dsn, target_rows, wait_for
from .test_pg_reviews import Held


def _approve(review_id: int, decision: str = "approve", reason: str = "") -> None:
    with session_scope() as s:
        vote(s, review_id, voter_email="dba@example.com", decision=decision, reason=reason)


def _review(review_id: int) -> Review:
    with session_scope() as s:
        return s.get(Review, review_id)


def _pending(conn, sql: str, params=None) -> int:
    """Run `sql`, which must be held and still pending after the hold; its review id."""
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        conn.execute(sql, params)
    assert "still pending" in str(exc.value), exc.value
    return int(exc.value.diag.message_detail.split()[-1])


def _latest_review(text_part: str) -> Review | None:
    with session_scope() as s:
        return s.scalars(select(Review).where(Review.operation.contains(text_part))
                         .order_by(Review.id.desc())).first()


def test_approving_one_update_does_not_let_another_value_run(relay, agent, world):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        approved = _pending(conn, "UPDATE refunds SET id = 1 WHERE id = 1")
        _approve(approved)
        other = _pending(conn, "UPDATE refunds SET id = 666 WHERE id = 1")  # same shape, other values
        assert other != approved
        assert target_rows(world.target, "SELECT id FROM refunds ORDER BY id") == [(1,)]
        assert _review(approved).consumed_at is None
        assert conn.execute("UPDATE refunds SET id = 1 WHERE id = 1").rowcount == 1  # exactly what was approved
    assert _review(approved).consumed_at is not None


def test_approving_in_3_does_not_let_a_longer_list_run(relay, agent, world):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        approved = _pending(conn, "DELETE FROM refunds WHERE id IN (999)")
        _approve(approved)
        assert _pending(conn, "DELETE FROM refunds WHERE id IN (1, 2, 999)") != approved
        assert target_rows(world.target, "SELECT count(*) FROM refunds WHERE id = 1") == [(1,)]
        assert conn.execute("DELETE FROM refunds WHERE id IN (999)").rowcount == 0


def test_a_same_shape_statement_does_not_join_the_pending_review(relay, agent, world):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        first = _pending(conn, "UPDATE refunds SET id = 1 WHERE id = 1 AND 7 = 7")
        second = _pending(conn, "UPDATE refunds SET id = 1 WHERE id = 1 AND 8 = 8")
        again = _pending(conn, "UPDATE refunds SET id = 1 WHERE id = 1 AND 7 = 7")
    assert first != second and again == first


@pytest.mark.parametrize("prepare_threshold", [None, 0], ids=["unnamed", "named"])
def test_extended_protocol_approval_binds_the_parameters(relay, agent, world, prepare_threshold):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        conn.prepare_threshold = prepare_threshold
        sql = "DELETE FROM refunds WHERE id = %s"
        approved = _pending(conn, sql, (998,))
        review = _review(approved)
        assert review.operation == "DELETE FROM refunds WHERE id = $1" and review.details["params"] == ["998"]
        _approve(approved)
        other = _pending(conn, sql, (1,))  # the same prepared text, another value
        assert other != approved and _review(other).details["params"] == ["1"]
        assert target_rows(world.target, "SELECT count(*) FROM refunds WHERE id = 1") == [(1,)]
        assert conn.execute(sql, (998,)).rowcount == 0  # the approved values run
        assert _pending(conn, sql, (998,)) != approved  # once
    with session_scope() as s:
        used = s.scalars(select(AuditEntry).where(AuditEntry.action == "review.used",
                                                  AuditEntry.target == f"review:{approved}")).one()
    assert used.data["operation"] == "DELETE FROM refunds WHERE id = $1" and used.data["params"] == ["998"]


def test_the_rejection_reason_is_in_the_error_detail(relay, agent, world):
    held = Held(relay, agent, None)
    voter = threading.Thread(target=lambda: held.noticed.wait(20) and _approve(
        held.review_id(), "reject", "use the refunds API instead"))
    voter.start()
    with pytest.raises(errors.InsufficientPrivilege) as exc:
        held.conn.execute("DELETE FROM orders WHERE id = 41")
    voter.join()
    assert "use the refunds API instead" in exc.value.diag.message_detail
    assert target_rows(world.target, "SELECT count(*) FROM orders WHERE id = 41") == [(1,)]
    held.conn.close()


def _a_later_approval_goes_through(relay, agent: str, row: int) -> None:
    """The positive signal to wait for before asserting that an approval released nothing:
    a statement held after that approval, and approved after it, has run. A statement
    still waiting on the first approval would have woken to it before the second was
    even held (the relay follows the store's decisions as they come)."""
    done: dict = {}

    def run() -> None:
        with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
            done["rows"] = conn.execute(f"INSERT INTO orders VALUES ({row}, 'approved later')").rowcount

    thread = threading.Thread(target=run)
    thread.start()
    review = wait_for(lambda: _latest_review(f"VALUES ({row},"), timeout=20)
    assert review is not None, "the later statement was not held"
    _approve(review.id)
    thread.join(60)
    assert done.get("rows") == 1, "the later, approved statement did not run"


def _wait_gone(review_id: int) -> Review:
    review = wait_for(lambda: (r := _review(review_id)).requester_gone_at is not None and r, timeout=15)
    assert review, f"review {review_id} was not marked requester-gone"
    return review


def test_a_killed_psql_statement_never_runs_after_approval(relay, agent, world):
    row = 1000 + (0 if world.target.lane else 1)
    env = {**os.environ, "PGPASSWORD": agent, "PGSSLMODE": "require"}
    proc = subprocess.Popen(["psql", "-X", "-h", relay.host, "-p", str(relay.port), "-U", "agent", "-d", "app",
                             "-c", f"INSERT INTO orders VALUES ({row}, 'after the client died')"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        review = wait_for(lambda: _latest_review(f"VALUES ({row},"), timeout=20)
        assert review is not None and review.status == "pending"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _wait_gone(review.id).status == "pending"
    finally:
        if proc.poll() is None:
            proc.kill()
    _approve(review.id)
    _a_later_approval_goes_through(relay, agent, row + 100)
    assert target_rows(world.target, f"SELECT count(*) FROM orders WHERE id = {row}") == [(0,)]
    assert _review(review.id).consumed_at is None
    with session_scope() as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.target == f"review:{review.id}")).all()
    assert "review.withdrawn" in actions and "review.used" not in actions


def test_a_cancel_request_withdraws_the_held_statement(relay, agent, world):
    row = 1010 + (0 if world.target.lane else 1)
    held = Held(relay, agent, None)
    result: dict = {}

    def run() -> None:
        try:
            held.conn.execute(f"INSERT INTO orders VALUES ({row}, 'cancelled while held')")
        except Exception as exc:  # asserted below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert held.noticed.wait(20)
    review_id = held.review_id()
    held.conn.cancel()
    thread.join(20)
    assert isinstance(result.get("error"), errors.QueryCanceled), result
    assert _wait_gone(review_id).status == "pending"
    _approve(review_id)
    _a_later_approval_goes_through(relay, agent, row + 100)
    assert target_rows(world.target, f"SELECT count(*) FROM orders WHERE id = {row}") == [(0,)]
    assert _review(review_id).consumed_at is None
    # The session carries on; the approval is still there for an identical retry.
    assert held.conn.execute(f"INSERT INTO orders VALUES ({row}, 'cancelled while held')").rowcount == 1
    assert _review(review_id).consumed_at is not None
    held.conn.close()


def test_a_statement_sent_before_the_client_left_is_recorded_with_its_outcome(relay, agent, world):
    from app.relay.postgres import protocol as pgwire

    from .conftest import events
    from .rawclient import RawClient

    row = 1020 + (0 if world.target.lane else 1)
    with world.target.admin() as admin:  # a table of its own: other tests count the shared ones
        admin.execute("CREATE TABLE IF NOT EXISTS sent_then_gone (id int, note text)")
        admin.execute(f"GRANT ALL ON sent_then_gone TO {world.target.roles['scram']}")
    client = RawClient(relay.host, relay.port)
    client.login("agent", "app", agent)
    client.send(pgwire.query_message(f"INSERT INTO sent_then_gone SELECT {row}, 'sent, then gone' FROM pg_sleep(0.5)"))
    client.sock.close()  # gone before the answer

    def recorded():
        return [d for _, kind, d in events() if kind == "output" and f"SELECT {row}," in d.get("sql", "")]

    [event] = wait_for(recorded, timeout=20) or [None]
    assert event is not None, "the statement ran but was not recorded"
    assert event["tag"] == "INSERT 0 1"
    assert target_rows(world.target, f"SELECT count(*) FROM sent_then_gone WHERE id = {row}") == [(1,)]
