"""Post new reviews and keep their messages true; drain the outbox. Runs in the scheduler.

The store is the truth, the bus only a hint: `reconcile` compares every live review
with what its Slack message was last queued to show, so a missed wake-up, a restart or
a decision made anywhere (portal, Slack, API, expiry) all end the same way. The loop
wakes on any `review*` bus event (a new review, a vote, an expiry), and at the latest
every SAFETY_INTERVAL seconds or when an outbox retry falls due.

It runs as a thread of `airlock scheduler` (one per deployment, behind its lock),
started by `register_jobs`, together with the Socket Mode client when an app token is
set. Portal processes only kick a drain after a click, for a quick reply.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import exists, select

from app.db import session_scope
from app.models import Review, SlackMessage, utcnow
from app.slack import client as slack
from app.slack import linking, outbox, sync

log = logging.getLogger(__name__)

SAFETY_INTERVAL = 5.0
NEW_REVIEW_WINDOW = timedelta(hours=24)  # older pending reviews are not announced late
PRUNE_EVERY = 3600.0
BATCH = 200


def reconcile(now: datetime | None = None) -> int:
    """Queue a message for each review whose Slack message is missing or behind; returns how many."""
    if not slack.configured():
        return 0
    now = now or utcnow()
    queued = 0
    with session_scope() as s:
        fresh = s.scalars(
            select(Review).where(
                Review.status == "pending", Review.expires_at > now, Review.created_at >= now - NEW_REVIEW_WINDOW,
                ~exists().where(SlackMessage.review_id == Review.id),
            ).order_by(Review.id).limit(BATCH)
        ).all()
        for review in fresh:
            queued += sync.track(s, review, now=now)
        live = s.execute(
            select(SlackMessage, Review).join(Review, SlackMessage.review_id == Review.id)
            .where(SlackMessage.final.is_(False)).order_by(SlackMessage.id).limit(BATCH * 5)
        ).all()
        for message, review in live:
            queued += sync.track(s, review, now=now, message=message)
    return queued


def tick() -> outbox.DrainReport:
    """One round: reconcile, then deliver what is due."""
    reconcile()
    return outbox.drain()


class Notifier:
    """The loop: its own thread and event loop, so the bus can wake it (LISTEN on PostgreSQL)."""

    def __init__(self, safety_interval: float | None = None) -> None:
        self.safety_interval = SAFETY_INTERVAL if safety_interval is None else safety_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._last_prune = 0.0
        self.rounds = 0

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="airlock-slack-notifier",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)  # don't sleep out the safety interval
            except RuntimeError:  # the loop has already ended
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    async def _main(self) -> None:
        from app.bus import get_bus

        wake = self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        unsubscribe = get_bus().subscribe("review", lambda _channel, _payload: wake.set())
        backoff = 1.0
        try:
            while not self._stop.is_set():
                wake.clear()
                try:
                    await asyncio.to_thread(self._round)
                    delay = await asyncio.to_thread(outbox.next_due_in)
                    backoff = 1.0
                except Exception:  # the store or Slack may be down: try again, a little later each time
                    log.exception("slack notifier round failed")
                    delay, backoff = backoff, min(backoff * 2, 30.0)
                timeout = self.safety_interval if delay is None else min(self.safety_interval, max(0.05, delay))
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            unsubscribe()

    def _round(self) -> None:
        tick()
        self.rounds += 1
        if time.monotonic() - self._last_prune > PRUNE_EVERY:
            self._last_prune = time.monotonic()
            with session_scope() as s:
                outbox.prune(s)
                linking.prune_codes(s)


class SlackWorker:
    """What the scheduler process runs for Slack: the notifier and, if configured, Socket Mode."""

    def __init__(self) -> None:
        self.notifier: Notifier | None = None
        self.socket = None  # socket_mode.Runner, when an app token is set

    def start(self) -> None:
        from app.config import settings
        from app.slack import socket_mode

        self.notifier = Notifier().start()
        if settings().slack_app_token:
            self.socket = socket_mode.Runner().start()
        log.info("slack notifier running%s", " with Socket Mode" if self.socket else "")

    def stop(self) -> None:
        if self.socket is not None:
            try:
                self.socket.stop()
            except Exception:
                log.exception("closing Socket Mode failed")
        if self.notifier is not None:
            self.notifier.stop()


def register_jobs(scheduler) -> None:
    """Called by app.scheduler: run the worker for as long as the scheduler runs."""
    if not slack.configured():
        return
    from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN, EVENT_SCHEDULER_START

    worker = SlackWorker()

    def on_event(event) -> None:
        if event.code == EVENT_SCHEDULER_START:
            worker.start()
        elif event.code == EVENT_SCHEDULER_SHUTDOWN:
            worker.stop()

    scheduler.add_listener(on_event, EVENT_SCHEDULER_START | EVENT_SCHEDULER_SHUTDOWN)
    if scheduler.running:  # the leader registers jobs after starting its scheduler (paused)
        worker.start()
