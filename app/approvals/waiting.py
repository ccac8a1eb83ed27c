"""Waiting for a decision across processes: the bus wakes a waiter, a re-read every
second covers a lost wake-up."""
from __future__ import annotations

import asyncio
import random
import time

from sqlalchemy import select

from app import bus
from app.db import session_scope
from app.models import Review, utcnow

from .errors import ReviewNotFound

# A lost wake-up costs at most this long: waiters re-read the review this often anyway.
SAFETY_INTERVAL = 1.0


def current_status(review_id: int) -> str:
    """The review's status as a waiter sees it: a pending review past its time is expired."""
    with session_scope() as s:
        row = s.execute(select(Review.status, Review.expires_at).where(Review.id == review_id)).first()
    if row is None:
        raise ReviewNotFound(f"review {review_id} does not exist")
    if row.status == "pending" and row.expires_at <= utcnow():
        return "expired"
    return row.status


async def wait_for_decision(review_id: int, timeout: float, *, safety_interval: float = SAFETY_INTERVAL,
                            gone: asyncio.Future | None = None) -> str:
    """Wait up to `timeout` s; return approved, rejected, expired, or pending, or
    "withdrawn" as soon as `gone` completes (the requester left)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout)
    b = bus.get_bus()
    # Watch first, then read: a decision landing between the two still wakes us. That
    # holds only once the listener is up; if it was not yet, read again when it is.
    with b.watch(f"review:{review_id}") as watch:
        if gone is not None:
            gone.add_done_callback(lambda _: watch.fire())
        covered = b.is_ready
        while True:
            if gone is not None and gone.done():
                return "withdrawn"
            status = await asyncio.to_thread(current_status, review_id)
            remaining = deadline - loop.time()
            if status != "pending" or remaining <= 0:
                return status
            if not covered:
                covered = True
                if await b.ready(min(remaining, 2.0)):
                    continue
            # Jitter: many holds started together must not re-read the store in lockstep.
            await watch.wait(min(remaining, safety_interval * random.uniform(0.75, 1.25)))


def wait_for_decision_sync(review_id: int, timeout: float, *, safety_interval: float = SAFETY_INTERVAL) -> str:
    deadline = time.monotonic() + max(0.0, timeout)
    watch = bus.SyncWatch(f"review:{review_id}")
    while True:
        status = current_status(review_id)
        remaining = deadline - time.monotonic()
        if status != "pending" or remaining <= 0:
            return status
        watch.wait(min(remaining, safety_interval))
