"""Scheduler jobs: thin calls into the services, each in its own transaction, `now` injectable."""
from __future__ import annotations

import logging
from datetime import datetime

from app.db import session_scope
from app.models import utcnow

log = logging.getLogger("airlock.campaigns")


def campaigns_tick(now: datetime | None = None) -> dict[str, int]:
    """Start due runs, remind, escalate, apply deadlines."""
    from app.campaigns import lifecycle, runs

    now = now or utcnow()
    with session_scope() as s:
        started = runs.start_due(s, now)
    with session_scope() as s:
        reminded = lifecycle.remind(s, now)
        escalated = lifecycle.escalate(s, now)
    with session_scope() as s:
        closed = lifecycle.close_due(s, now)
    out = {"started": len(started), "reminded": reminded, "escalated": escalated, "closed": closed.pop("closed"),
           **{f"deadline_{k}": n for k, n in closed.items()}}
    if any(out.values()):
        log.info("campaigns: %s", out)
    return out


def access_requests_tick(now: datetime | None = None) -> dict[str, int]:
    from app.campaigns import requests

    with session_scope() as s:
        return requests.settle(s, now or utcnow())


def housekeeping_tick(now: datetime | None = None) -> dict[str, int]:
    from app.campaigns import housekeeping

    now = now or utcnow()
    with session_scope() as s:
        grants = housekeeping.expire_grants(s, now)
        tokens = housekeeping.expire_tokens(s, now)
    with session_scope() as s:
        purged = housekeeping.purge_recordings(s, now)
    return {"grants": len(grants), "tokens": len(tokens), "recordings": purged}


def usage_tick(now: datetime | None = None) -> int:
    """Summarise ended sessions for access reviews (a campaign start then reads one row each)."""
    from app.campaigns.usage import summarize_ended

    with session_scope() as s:
        return summarize_ended(s, now or utcnow())


def register_jobs(scheduler) -> None:
    """Text references and stable ids: a restart replaces these jobs, never duplicates them."""
    scheduler.add_job("app.campaigns.jobs:campaigns_tick", "interval", seconds=60, id="campaigns",
                      replace_existing=True)
    scheduler.add_job("app.campaigns.jobs:access_requests_tick", "interval", seconds=5, id="access-requests",
                      replace_existing=True)
    scheduler.add_job("app.campaigns.jobs:usage_tick", "interval", seconds=60, id="usage-summaries",
                      replace_existing=True)
    scheduler.add_job("app.campaigns.jobs:housekeeping_tick", "interval", seconds=15, id="housekeeping",
                      replace_existing=True)
