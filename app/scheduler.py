"""`airlock scheduler`: APScheduler jobs that call services. No business logic here.

Exactly one scheduler runs: a PostgreSQL advisory lock (or a file lock on the SQLite
default) is held for the process's lifetime; a second scheduler stands by until the
first goes away.
"""
from __future__ import annotations

import fcntl
import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text

from app.config import settings
from app.db import engine, session_scope

log = logging.getLogger("airlock.scheduler")

LOCK_KEY = 0x41_49_52_4C  # "AIRL": the advisory lock every scheduler competes for
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}


def expire_reviews_job() -> None:
    from app import approvals

    with session_scope() as s:
        expired = approvals.expire_reviews(s)
    if expired:
        log.info("expired reviews %s", expired)


def register_jobs(scheduler: BackgroundScheduler) -> None:
    """Jobs are added by text reference with stable ids, so restarts replace, not duplicate."""
    scheduler.add_job("app.scheduler:expire_reviews_job", "interval", seconds=10,
                      id="expire-reviews", replace_existing=True)
    from app.slack.notifier import register_jobs as slack_jobs  # posts reviews, keeps messages true

    slack_jobs(scheduler)
    try:
        from app.campaigns import register_jobs as campaign_jobs  # arrives with access reviews
    except ImportError:
        return
    campaign_jobs(scheduler)


@contextmanager
def single_instance(stop: threading.Event) -> Iterator[bool]:
    """Yield True once this process holds the scheduler lock (False if asked to stop first)."""
    if settings().is_sqlite:
        path = settings().home / "scheduler.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            while not stop.is_set():
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    log.info("another scheduler holds %s; standing by", path)
                    stop.wait(5)
            yield not stop.is_set()
        return
    with engine().connect() as conn:
        while not stop.is_set():
            if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
                conn.commit()
                break
            conn.commit()
            log.info("another scheduler holds the advisory lock; standing by")
            stop.wait(5)
        yield not stop.is_set()


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(levelname)s %(message)s")
    # APScheduler logs every routine run at INFO ("Running job", "executed successfully"),
    # burying the admin password and real problems; a failing job still logs at ERROR.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with single_instance(stop) as leader:
        if not leader:
            return
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine())}, job_defaults=JOB_DEFAULTS, timezone="UTC"
        )
        register_jobs(scheduler)
        scheduler.start()
        log.info("scheduler running")
        stop.wait()
        scheduler.shutdown(wait=True)
        log.info("scheduler stopped")
