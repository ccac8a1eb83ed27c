"""The outbox: Retry-After honoured, backoff on 5xx and timeouts, give-up on permanent errors,
one sender per row, and rows that outlive the process that wrote them."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from app.config import settings
from app.db import session_scope
from app.models import SlackMessage, SlackOutbox, utcnow
from app.slack import client as slack_client
from app.slack import notifier, outbox
from tests.integration.portal.held import HeldClient, sql_op
from tests.integration.slack import scenario as sc

ROOT = Path(__file__).resolve().parents[3]


def _message_row(rid: int) -> SlackOutbox | None:
    with session_scope() as s:
        msg_id = s.scalar(select(SlackMessage.id).where(SlackMessage.review_id == rid))
        return s.scalars(select(SlackOutbox).where(SlackOutbox.key == f"message:{msg_id}")).first()


def _ts(rid: int) -> str | None:
    with session_scope() as s:
        return s.scalar(select(SlackMessage.ts).where(SlackMessage.review_id == rid))


def test_a_rate_limit_is_retried_after_slacks_retry_after(slack_env, settle):
    fake = slack_env
    fake.fail("chat.postMessage", status=429, retry_after=2)
    rid = sc.open_review()
    notifier.tick()
    first = fake.calls_of("chat.postMessage")
    assert len(first) == 1
    row = _message_row(rid)
    assert row.status == "pending" and row.attempts == 1 and "rate limited" in row.last_error
    wait = (row.next_attempt_at - row.updated_at).total_seconds()
    assert 1.9 <= wait <= 2.1, wait  # Slack's 2 s, not our own 0.2 s backoff
    assert outbox.drainer().paused_for("message") > 1.0
    for _ in range(5):  # nobody knocks again before the time is up
        notifier.tick()
        time.sleep(0.1)
    assert len(fake.calls_of("chat.postMessage")) == 1
    settle(lambda: _ts(rid), what="the post after the wait")
    calls = fake.calls_of("chat.postMessage")
    assert len(calls) == 2 and calls[1].at - calls[0].at >= 2.0
    assert _message_row(rid).status == "done"


def test_server_errors_and_timeouts_are_retried_with_backoff(slack_env, settle, monkeypatch):
    fake = slack_env
    monkeypatch.setattr(slack_client, "CALL_TIMEOUT", 1.0)
    fake.fail("chat.postMessage", status=500)
    fake.fail("chat.postMessage", status=200, delay=2.5)  # no answer within the client's timeout
    rid = sc.open_review()
    settle(lambda: _ts(rid), timeout=20, what="the post after two failures")
    calls = fake.calls_of("chat.postMessage")
    assert len(calls) == 3
    gaps = [b.at - a.at for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.8 * outbox.BASE_DELAY and gaps[1] >= 1.0 + 0.8 * 2 * outbox.BASE_DELAY, gaps
    row = _message_row(rid)
    assert row.status == "done" and row.attempts == 3 and row.last_error == ""


def test_a_permanent_error_gives_up_without_hammering(slack_env, settle):
    fake = slack_env
    fake.fail("chat.postMessage", status=200, error="channel_not_found")
    rid = sc.open_review()
    settle(lambda: (_message_row(rid) or SlackOutbox()).status == "dead", what="the row given up")
    for _ in range(3):
        notifier.tick()
    assert len(fake.calls_of("chat.postMessage")) == 1
    assert "channel_not_found" in _message_row(rid).last_error


def test_slack_being_down_never_blocks_a_review(app, slack_env, settle, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("AIRLOCK_SLACK_API_URL", f"http://127.0.0.1:{dead}/api/")
    settings.cache_clear()
    started = time.monotonic()
    held = HeldClient(sql_op("UPDATE invoices SET paid = true WHERE id = 7"), hold=30).start()
    rid = settle(lambda: _pending(), what="the review")
    assert time.monotonic() - started < 5
    for _ in range(3):
        report = notifier.tick()  # fails quietly, retries later
    assert report.sent == []
    from tests.integration.slack.test_slack_updates import _csrf, _login

    portal = app.test_client()
    _login(portal, "alice@example.com")
    assert portal.get("/reviews").status_code == 200
    portal.post(f"/reviews/{rid}/vote", data={"action": "approve", "csrf_token": _csrf(portal, f"/reviews/{rid}")})
    verdict = held.wait(20)
    assert verdict is not None and verdict.action == "allow"
    row = _message_row(rid)
    assert row.status == "pending" and "unreachable" in row.last_error


def _pending() -> int | None:
    from app.models import Review

    with session_scope() as s:
        return s.scalar(select(Review.id).where(Review.status == "pending"))


def test_concurrent_drainers_send_each_row_exactly_once(slack_env):
    fake = slack_env
    with session_scope() as s:
        for i in range(6):
            outbox.queue_call(s, "chat.postMessage", {"channel": "#race", "text": f"n{i}"})
    for _ in range(6):
        fake.fail("chat.postMessage", status=200, delay=0.2)  # slow answers widen any race
    drainers = [outbox.Drainer() for _ in range(4)]
    threads = [threading.Thread(target=d.drain) for d in drainers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    texts = sorted(c.args["text"] for c in fake.calls_of("chat.postMessage"))
    assert texts == [f"n{i}" for i in range(6)]
    with session_scope() as s:
        assert set(s.scalars(select(SlackOutbox.status))) == {"done"}


def test_a_change_while_sending_is_sent_next(app, slack_env, settle):
    fake = slack_env
    rid = sc.open_review()
    fake.fail("chat.postMessage", status=200, delay=1.0)  # slow, but it succeeds
    sending = threading.Thread(target=notifier.tick)
    sending.start()
    fake.wait_for(lambda: fake.calls_of("chat.postMessage"), what="the post in flight")
    with session_scope() as s:  # decided while the post is in flight
        from app import approvals

        approvals.vote(s, rid, voter_email="alice@example.com", decision="approve")
    notifier.reconcile()
    sending.join(10)
    row = _message_row(rid)
    assert row.status == "pending"  # the posted state is stale: another round is due
    settle(lambda: fake.calls_of("chat.update"), what="the follow-up update")
    (channel, ts), = fake.messages.keys()
    assert all(b["type"] != "actions" for b in fake.messages[(channel, ts)]["blocks"])


def test_an_outbox_entry_survives_a_process_restart(slack_env, store):
    """Written while Slack fails; a NEW process delivers it, including a row whose sender died mid-send."""
    fake = slack_env
    fake.down = True
    rid = sc.open_review()
    notifier.tick()
    row = _message_row(rid)
    assert row.status == "pending" and row.attempts == 1 and fake.calls_of("chat.postMessage")
    with session_scope() as s:
        orphan = outbox.queue_call(s, "chat.postEphemeral", {"channel": "C1", "user": "U_DAVE", "text": "orphan"})
        # As a process that crashed after claiming it would leave it:
        orphan.status, orphan.attempts, orphan.lease_until = "sending", 1, utcnow() - timedelta(seconds=1)
        orphan_id = orphan.id
    fake.down = False
    before = len(fake.calls)
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = str(ROOT)
    script = textwrap.dedent("""
        import time
        from app.slack import outbox
        deadline = time.monotonic() + 20
        sent = []
        while len(sent) < 2 and time.monotonic() < deadline:
            sent += outbox.drain().sent
            time.sleep(0.1)
        print("sent", sorted(sent))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"sent {sorted([row.id, orphan_id])}" in done.stdout, done.stdout + done.stderr[-2000:]
    methods = [c.method for c in fake.calls[before:]]
    assert sorted(methods) == ["chat.postEphemeral", "chat.postMessage"]
    assert _ts(rid) is not None
    with session_scope() as s:
        assert {r.status for r in s.scalars(select(SlackOutbox))} == {"done"}
