"""The durable Slack outbox: queue in a transaction, deliver later, retry with backoff.

Rows are claimed with a conditional UPDATE and a lease, so any number of drainers (the
scheduler's notifier, a portal that just took a click) can run at once and each row is
sent by one of them. A sender that dies mid-call leaves its lease behind; the row is
sent again once it runs out (at least once: a crash between Slack's answer and our
commit can repeat a post).

Backoff: Slack's Retry-After is honoured as given (and pauses that method for this
drainer); other transient failures wait 2, 4, 8 ... s up to 5 min, with jitter. Each row
gives up at its `give_up_at` (24 h for messages, 30 min for response_url replies);
permanent errors (channel_not_found, invalid_auth ...) give up at once.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import SlackOutbox, utcnow
from app.slack import client as slack
from app.slack.delivery import deliver_message

log = logging.getLogger(__name__)

BASE_DELAY = 2.0
MAX_DELAY = 300.0
LEASE = timedelta(seconds=max(60.0, 3 * slack.CALL_TIMEOUT))
MESSAGE_TTL = timedelta(hours=24)
RESPONSE_TTL = timedelta(minutes=30)  # Slack's response_url lives this long
KEEP_DONE = timedelta(days=7)


def insert_for(session: Session):
    """The dialect's INSERT, for ON CONFLICT clauses (SQLite and PostgreSQL both have them)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def queue_message(session: Session, message_id: int, *, now: datetime | None = None) -> None:
    """Keep SlackMessage `message_id` in sync: one row per message, re-armed on each change.

    A row being sent right now stays claimed; its sender sees the new generation when it
    finishes and leaves the row pending, so the newer state is sent next.
    """
    now = now or utcnow()
    insert = insert_for(session)
    stmt = insert(SlackOutbox).values(
        key=f"message:{message_id}", kind="message", method="", payload={"message_id": message_id},
        status="pending", generation=0, attempts=0, next_attempt_at=now, give_up_at=now + MESSAGE_TTL,
        last_error="", result={}, created_at=now, updated_at=now,
    )
    settled = SlackOutbox.status.in_(("done", "dead"))
    stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={
        "generation": SlackOutbox.generation + 1,
        "status": case((SlackOutbox.status == "sending", "sending"), else_="pending"),
        "attempts": case((settled, 0), else_=SlackOutbox.attempts),
        # A row waiting out a Retry-After keeps waiting; a settled one goes now.
        "next_attempt_at": case((settled, now), else_=SlackOutbox.next_attempt_at),
        "give_up_at": now + MESSAGE_TTL,
        "updated_at": now,
    })
    session.execute(stmt)


def queue_call(session: Session, method: str, args: dict[str, Any], *, ttl: timedelta = MESSAGE_TTL,
               now: datetime | None = None) -> SlackOutbox:
    """One Web API call (e.g. chat.postEphemeral), made once it goes through."""
    now = now or utcnow()
    row = SlackOutbox(kind="call", method=method, payload={"args": args}, next_attempt_at=now,
                      give_up_at=now + ttl, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def queue_response(session: Session, url: str, body: dict[str, Any], *, now: datetime | None = None) -> SlackOutbox:
    now = now or utcnow()
    row = SlackOutbox(kind="response", method="response_url", payload={"url": url, "body": body},
                      next_attempt_at=now, give_up_at=now + RESPONSE_TTL, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    method: str
    payload: dict[str, Any]
    generation: int
    attempts: int
    give_up_at: datetime | None


@dataclass
class DrainReport:
    sent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    skipped: int = 0  # due, but its method is paused by a Retry-After


def _due(now: datetime):
    return or_(
        and_(SlackOutbox.status == "pending", SlackOutbox.next_attempt_at <= now),
        and_(SlackOutbox.status == "sending", SlackOutbox.lease_until < now),
    )


def backoff(attempts: int) -> float:
    delay = min(MAX_DELAY, BASE_DELAY * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.8, 1.2)


class Drainer:
    """Delivers due rows. Keeps the Retry-After pauses it learned, so keep one per process."""

    def __init__(self) -> None:
        self._paused: dict[str, float] = {}  # method -> monotonic time it may run again
        self._lock = threading.Lock()

    def paused_for(self, method: str) -> float:
        with self._lock:
            return max(0.0, self._paused.get(method, 0.0) - time.monotonic())

    def _pause(self, method: str, seconds: float) -> None:
        with self._lock:
            self._paused[method] = max(self._paused.get(method, 0.0), time.monotonic() + seconds)

    def drain(self, *, limit: int = 100) -> DrainReport:
        report = DrainReport()
        if not slack.configured():
            return report  # rows wait (until they give up) for a bot token to come back
        with session_scope() as s:
            rows = s.execute(
                select(SlackOutbox.id, SlackOutbox.method, SlackOutbox.kind).where(_due(utcnow()))
                .order_by(SlackOutbox.next_attempt_at, SlackOutbox.id).limit(limit)
            ).all()
        for row_id, method, kind in rows:
            gate = method or kind
            if self.paused_for(gate) > 0:
                report.skipped += 1
                continue
            job = self._claim(row_id)
            if job is None:
                continue
            if job.give_up_at is not None and job.give_up_at < utcnow():
                self._finish_failed(job, slack.Failure("gave up: too late to deliver", False), report)
                continue
            try:
                result = _deliver(job)
            except Exception as exc:  # every failure is classified; none may stop the drain
                failure = slack.classify(exc)
                if failure.retry_after is not None:
                    self._pause(gate, failure.retry_after)
                self._finish_failed(job, failure, report)
            else:
                self._finish_ok(job, result or {}, report)
        return report

    def _claim(self, row_id: int) -> Job | None:
        now = utcnow()
        with session_scope() as s:
            res = s.execute(
                update(SlackOutbox).where(SlackOutbox.id == row_id, _due(now))
                .values(status="sending", lease_until=now + LEASE, attempts=SlackOutbox.attempts + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                return None  # another drainer has it
            r = s.execute(select(SlackOutbox).where(SlackOutbox.id == row_id)).scalar_one()
            return Job(r.id, r.kind, r.method, dict(r.payload or {}), r.generation, r.attempts, r.give_up_at)

    def _finish_ok(self, job: Job, result: dict[str, Any], report: DrainReport) -> None:
        now = utcnow()
        with session_scope() as s:
            changed = SlackOutbox.generation != job.generation
            s.execute(update(SlackOutbox).where(SlackOutbox.id == job.id).values(
                # Changed while we were sending: send the newer state next.
                status=case((changed, "pending"), else_="done"),
                attempts=case((changed, 0), else_=SlackOutbox.attempts),
                next_attempt_at=now, lease_until=None, last_error="", result=result, done_at=now, updated_at=now,
            ).execution_options(synchronize_session=False))
        report.sent.append(job.id)

    def _finish_failed(self, job: Job, failure: slack.Failure, report: DrainReport) -> None:
        now = utcnow()
        delay = failure.retry_after if failure.retry_after is not None else backoff(job.attempts)
        retry_at = now + timedelta(seconds=delay)
        give_up = not failure.transient or (job.give_up_at is not None and retry_at > job.give_up_at)
        with session_scope() as s:
            changed = SlackOutbox.generation != job.generation
            s.execute(update(SlackOutbox).where(SlackOutbox.id == job.id).values(
                # A newer state gets its own chance, even if this one could not be sent.
                status=case((changed, "pending"), else_="dead" if give_up else "pending"),
                next_attempt_at=retry_at, lease_until=None, last_error=str(failure)[:2000], updated_at=now,
            ).execution_options(synchronize_session=False))
        if give_up:
            log.warning("slack outbox %s (%s %s) gave up after %d attempt(s): %s",
                        job.id, job.kind, job.method, job.attempts, failure)
            report.dead.append(job.id)
        else:
            log.info("slack outbox %s (%s %s) failed (%s); retry in %.1fs", job.id, job.kind, job.method, failure, delay)
            report.retried.append(job.id)


def _deliver(job: Job) -> dict[str, Any]:
    if job.kind == "message":
        return deliver_message(int(job.payload["message_id"]))
    if job.kind == "response":
        return slack.post_response(job.payload["url"], job.payload["body"])
    if job.kind == "call":
        resp = slack.web_client().api_call(job.method, json=job.payload.get("args") or {})
        data = resp.data if isinstance(resp.data, dict) else {}
        return {k: data[k] for k in ("channel", "ts") if k in data}
    raise slack.DeliveryError(slack.Failure(f"unknown outbox kind {job.kind!r}", False))


def next_due_in(now: datetime | None = None) -> float | None:
    """Seconds until the next pending row is due (0 if one is due now), or None."""
    now = now or utcnow()
    with session_scope() as s:
        soonest = s.scalar(select(func.min(SlackOutbox.next_attempt_at)).where(SlackOutbox.status == "pending"))
        lease = s.scalar(select(func.min(SlackOutbox.lease_until)).where(SlackOutbox.status == "sending"))
    times = [t for t in (soonest, lease) if t is not None]
    if not times:
        return None
    return max(0.0, (min(times) - now).total_seconds())


def prune(session: Session, now: datetime | None = None) -> int:
    cutoff = (now or utcnow()) - KEEP_DONE
    return session.execute(
        delete(SlackOutbox).where(SlackOutbox.status.in_(("done", "dead")), SlackOutbox.updated_at < cutoff)
    ).rowcount or 0


# -- this process's drainer, and kicking it from request threads -------------------------

_drainer = Drainer()
_executor: ThreadPoolExecutor | None = None
_kick_lock = threading.Lock()
_kick_state = {"running": False, "again": False}


def drainer() -> Drainer:
    return _drainer


def drain(*, limit: int = 100) -> DrainReport:
    return _drainer.drain(limit=limit)


def executor() -> ThreadPoolExecutor:
    """Background threads for Slack work of this process (acks return before it runs)."""
    global _executor
    with _kick_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="airlock-slack")
        return _executor


def kick() -> None:
    """Drain soon in the background; many kicks while one drain runs make one more drain."""
    with _kick_lock:
        if _kick_state["running"]:
            _kick_state["again"] = True
            return
        _kick_state["running"] = True
    executor().submit(_kick_loop)


def _kick_loop() -> None:
    while True:
        try:
            _drainer.drain()
        except Exception:  # the store may be down: the notifier's loop retries later
            log.exception("slack outbox drain failed")
        with _kick_lock:
            if not _kick_state["again"]:
                _kick_state["running"] = False
                return
            _kick_state["again"] = False
