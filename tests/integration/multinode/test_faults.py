"""Faults on a multi-node deployment: each lets nothing through and loses nothing recorded.

- a relay worker SIGKILLed with a session open and a statement held;
- the target's backend terminated under an open session;
- a portal restarted while a hold waits;
- Slack down while a hold waits.
"""
from __future__ import annotations

import json
import os
import signal
import time

import psycopg
import pytest
from sqlalchemy import select

from app import audit
from app.db import session_scope
from app.models import RecordedSession, Review, SessionEvent, SlackMessage, SlackOutbox
from app.recording_seal import ABNORMAL
from tests.integration.slack.fake_slack import FakeSlack

from .conftest import start_portal, _spawn
from .test_multinode import held_statement


def _verify():
    with session_scope() as s:
        return audit.verify(s)


def _ended(run_id: str) -> RecordedSession | None:
    row = _session_of(run_id)
    return row if row is not None and row.ended_at is not None else None


def _session_of(run_id: str) -> RecordedSession | None:
    with session_scope() as s:
        return s.scalars(select(RecordedSession).where(RecordedSession.run_id == run_id)
                         .order_by(RecordedSession.started_at.desc())).first()


def _events(sid: str) -> list[tuple[str, dict]]:
    with session_scope() as s:
        rows = s.execute(select(SessionEvent.kind, SessionEvent.data).where(SessionEvent.session_id == sid)
                         .order_by(SessionEvent.seq)).all()
    return [(k, json.loads(d)) for k, d in rows]


def _wait(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _orders(cluster, order_id: int) -> int:
    with cluster.target() as t:
        return t.execute("SELECT count(*) FROM orders WHERE id = %s", (order_id,)).fetchone()[0]


def test_a_relay_worker_killed_with_a_held_statement_lets_nothing_through(cluster):
    relay_a, relay_b, portal_b = cluster.relays[0], cluster.relays[1], cluster.portals[1]
    token = cluster.tokens["agent"]
    bystander = psycopg.connect(cluster.dsn(relay_b, token), autocommit=True)
    conn = psycopg.connect(cluster.dsn(relay_a, token, application_name="mn-killed"), autocommit=True)
    for i in range(3):
        assert conn.execute("SELECT %s::int * 2", (i,)).fetchone() == (i * 2,)
    thread, result, review_id = held_statement(conn, "DELETE FROM orders WHERE id = 21")
    row = _wait(lambda: (r := _session_of("mn-killed")) is not None and r.owner and r)
    # What reached the store before the kill must survive it (a kill loses at most the
    # last flush window, AIRLOCK_RECORD_FLUSH_SECONDS).
    assert _wait(lambda: sum(1 for kind, _ in _events(row.id) if kind == "output") >= 3)
    os.kill(int(row.owner.split(":")[1]), signal.SIGKILL)
    thread.join(20)
    assert "error" in result, result  # the client lost its session: nothing ran
    conn.close()
    # The approval arrives after its client has gone: the statement is never run.
    status, body = cluster.api(portal_b, "POST", f"/reviews/{review_id}/vote", body={"decision": "approve"})
    assert status == 200, body
    # The positive signal first: a statement held after that approval, and approved after
    # it, has run; had anything still waited on the first approval, it would have woken sooner.
    later, later_result, later_id = held_statement(bystander, "DELETE FROM orders WHERE id = 22")
    status, body = cluster.api(portal_b, "POST", f"/reviews/{later_id}/vote", body={"decision": "approve"})
    assert status == 200, body
    later.join(20)
    assert later_result.get("rowcount") == 1, later_result
    assert _orders(cluster, 21) == 1
    sealed = _wait(lambda: _ended("mn-killed"))
    assert sealed, "the killed worker's session was not sealed"
    assert sealed.meta["ended"] == ABNORMAL and sealed.event_count == len(_events(sealed.id)) >= 3
    assert _verify().ok
    # The other relay's session never noticed; relay A's restarted worker serves again.
    assert bystander.execute("SELECT 2 + 2").fetchone() == (4,)
    bystander.close()
    deadline = time.monotonic() + 15
    while True:
        try:
            with psycopg.connect(cluster.dsn(relay_a, token), autocommit=True) as again:
                assert again.execute("SELECT 1 + 1").fetchone() == (2,)
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_a_target_restart_ends_the_session_clearly_and_the_next_one_works(cluster):
    relay_b = cluster.relays[1]
    token = cluster.tokens["agent"]
    conn = psycopg.connect(cluster.dsn(relay_b, token, application_name="mn-victim"), autocommit=True)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    with cluster.target() as t:
        killed = t.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'mn-victim' AND datname = %s", (cluster.target_db,)).fetchall()
    assert killed == [(True,)]
    with pytest.raises(psycopg.OperationalError) as err:
        conn.execute("INSERT INTO t VALUES (99)")
    assert "target" in str(err.value) or "terminat" in str(err.value)
    conn.close()
    with cluster.target() as t:
        assert t.execute("SELECT count(*) FROM t WHERE id = 99").fetchone() == (0,)
    with psycopg.connect(cluster.dsn(relay_b, token), autocommit=True) as again:
        assert again.execute("SELECT count(*) FROM t").fetchone() == (2,)
    row = _wait(lambda: _ended("mn-victim"))
    assert row and row.digest and row.meta.get("ended") != ABNORMAL
    kinds = [k for k, _ in _events(row.id)]
    assert kinds.count("output") >= 1 and "notice" in kinds  # the statement before, the fatal after
    assert _verify().ok


def test_a_portal_restart_loses_no_review(cluster):
    # Each test holds a statement of a shape of its own: an approve-once approval is
    # matched by shape, and the killed worker's test leaves one unused.
    relay_a, portal_a = cluster.relays[0], cluster.portals[0]
    with psycopg.connect(cluster.dsn(relay_a, cluster.tokens["agent"]), autocommit=True) as conn:
        thread, result, review_id = held_statement(conn, "DELETE FROM orders WHERE id = 31 AND item IS NOT NULL")
        status, before = cluster.api(portal_a, "GET", f"/reviews/{review_id}")
        assert status == 200 and before["status"] == "pending"
        port = portal_a.port
        portal_a.stop()
        assert _orders(cluster, 31) == 1 and thread.is_alive()  # still held while no portal runs
        restarted = start_portal(cluster.env, port)
        cluster.portals[0] = restarted
        status, after = cluster.api(restarted, "GET", f"/reviews/{review_id}")
        assert status == 200 and after["status"] == "pending" and after["operation"] == before["operation"]
        status, body = cluster.api(restarted, "POST", f"/reviews/{review_id}/vote", body={"decision": "approve"})
        assert status == 200 and body["status"] == "approved", body
        thread.join(20)
    assert result.get("rowcount") == 1, result
    assert _orders(cluster, 31) == 0


def test_slack_down_holds_and_loses_no_message(cluster):
    fake = FakeSlack(bot_token="xoxb-mn", app_token="xapp-mn").start()
    fake.down = True
    env = {**os.environ, **cluster.env, "AIRLOCK_SLACK_BOT_TOKEN": "xoxb-mn",
           "AIRLOCK_SLACK_SIGNING_SECRET": "mn-secret", "AIRLOCK_SLACK_DEFAULT_CHANNEL": "#mn-reviews",
           "AIRLOCK_SLACK_API_URL": fake.api_url, "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
    scheduler = _spawn("scheduler", env, r"scheduler running")
    try:
        with psycopg.connect(cluster.dsn(cluster.relays[1], cluster.tokens["agent"]), autocommit=True) as conn:
            thread, result, review_id = held_statement(conn, "DELETE FROM orders WHERE item = 'item 41'")
            assert fake.wait_for(lambda: fake.calls_of("chat.postMessage"), what="a try to post the review")

            def failed_delivery():
                with session_scope() as s:
                    msg = s.scalars(select(SlackMessage).where(SlackMessage.review_id == review_id)).first()
                    box = s.scalars(select(SlackOutbox).where(SlackOutbox.status == "pending",
                                                              SlackOutbox.attempts >= 1)).all()
                    return msg is not None and msg.ts is None and box

            assert _wait(failed_delivery), "the failed post was not kept for a retry"
            assert thread.is_alive() and _orders(cluster, 41) == 1  # held, not let through
            status, body = cluster.api(cluster.portals[1], "POST", f"/reviews/{review_id}/vote",
                                       body={"decision": "approve"})
            assert status == 200 and body["status"] == "approved", body
            thread.join(20)
        assert result.get("rowcount") == 1, result
        fake.down = False  # Slack is back: the kept message goes out, showing the decision

        def delivered():
            with session_scope() as s:
                msg = s.scalars(select(SlackMessage).where(SlackMessage.review_id == review_id)).first()
                return msg is not None and msg.ts is not None
        assert _wait(delivered, timeout=40), "the review's Slack message was never delivered\n" + scheduler.tail()
        with session_scope() as s:
            assert s.get(Review, review_id).status == "approved"
    finally:
        scheduler.stop()
        fake.stop()
