"""Slack tests: a fake Slack Web API on a free port, the real Flask endpoint, a real store."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest

from app.config import settings
from app.recording import reset_recorder
from app.slack import notifier, outbox, signing
from tests.integration.slack import scenario as sc
from tests.integration.slack.fake_slack import FakeSlack


@pytest.fixture
def fake_slack():
    fake = FakeSlack(bot_token=sc.BOT_TOKEN, app_token=sc.APP_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def slack_env(store, fake_slack, monkeypatch):
    """Slack configured against the fake, over either store."""
    monkeypatch.setenv("AIRLOCK_SLACK_BOT_TOKEN", sc.BOT_TOKEN)
    monkeypatch.setenv("AIRLOCK_SLACK_SIGNING_SECRET", sc.SECRET)
    monkeypatch.setenv("AIRLOCK_SLACK_DEFAULT_CHANNEL", sc.DEFAULT_CHANNEL)
    monkeypatch.setenv("AIRLOCK_SLACK_API_URL", fake_slack.api_url)
    monkeypatch.setenv("AIRLOCK_PUBLIC_URL", "https://airlock.example.test")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(outbox, "BASE_DELAY", 0.2)  # quick retries; Retry-After is still honoured as sent
    monkeypatch.setattr(outbox, "_drainer", outbox.Drainer())  # no pauses left over from another test
    settings.cache_clear()
    signing.reset_rate_limit()
    reset_recorder()
    sc.seed()
    yield fake_slack
    _quiesce()
    reset_recorder()


def _quiesce() -> None:
    """Let this test's background Slack work finish before its store goes away."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with outbox._kick_lock:
            if not outbox._kick_state["running"]:
                break
        time.sleep(0.02)
    background_idle()


def background_idle(timeout: float = 10.0) -> None:
    """Return once all Slack background work submitted before the call has finished: the
    positive signal a test waits for before asserting that a request did *not* vote.

    One barrier task per executor thread: the queue is first in, first out, so they can
    all be running together only when every earlier task has ended."""
    pool = outbox.executor()
    threads = pool._max_workers  # ThreadPoolExecutor keeps no public count
    barrier = threading.Barrier(threads + 1)
    for _ in range(threads):
        pool.submit(barrier.wait, timeout)
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        raise AssertionError(f"Slack background work still running after {timeout} s") from None


@pytest.fixture
def app(slack_env):
    from app.portal import audit_views, create_app

    audit_views._last.clear()
    return create_app({"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def settle() -> Callable[..., Any]:
    """Run the notifier's rounds until `predicate()` holds (as the scheduler's loop would)."""

    def run(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            notifier.tick()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"never settled: {what or predicate}")
            time.sleep(0.05)

    return run
