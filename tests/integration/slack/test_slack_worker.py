"""The scheduler-side worker: woken by the bus, not by its slow safety round."""
from __future__ import annotations

import threading
import time

from apscheduler.schedulers.background import BackgroundScheduler

from app.slack import notifier
from tests.integration.slack import scenario as sc
from tests.integration.slack.conftest import background_idle


def test_the_notifier_loop_posts_and_updates_on_bus_wake_ups(slack_env):
    fake = slack_env
    loop = notifier.Notifier(safety_interval=30.0).start()  # the safety round would be far too slow
    try:
        fake.wait_for(lambda: loop.rounds >= 1, what="the first round")
        started = time.monotonic()
        rid = sc.open_review()
        fake.wait_for(lambda: fake.calls_of("chat.postMessage"), timeout=10, what="the post")
        assert time.monotonic() - started < 5
        from app import approvals
        from app.db import session_scope

        with session_scope() as s:
            approvals.vote(s, rid, voter_email="alice@example.com", decision="reject", reason="no", via="api")
        fake.wait_for(lambda: fake.calls_of("chat.update"), timeout=10, what="the update")
        assert time.monotonic() - started < 10
    finally:
        loop.stop()


def test_the_scheduler_runs_the_worker_for_as_long_as_it_runs(slack_env, monkeypatch):
    fake = slack_env
    monkeypatch.setattr(notifier, "SAFETY_INTERVAL", 0.2)
    scheduler = BackgroundScheduler(timezone="UTC")
    notifier.register_jobs(scheduler)
    scheduler.start()
    try:
        sc.open_review()
        fake.wait_for(lambda: fake.calls_of("chat.postMessage"), timeout=10, what="the post")
    finally:
        scheduler.shutdown(wait=True)
    # Stopped with the scheduler: its threads have ended, so nothing is left to post.
    alive = {t.name for t in threading.enumerate()} & {"airlock-slack-notifier", "airlock-slack-socket"}
    assert not alive, alive
    after = len(fake.calls)
    sc.open_review(sc.sql_op("UPDATE invoices SET paid = false WHERE id = 8"))
    background_idle()
    assert len(fake.calls) == after
