"""`airlock scheduler`: APScheduler jobs that call services. No business logic here.

Exactly one scheduler runs jobs (app.leader): the others stand by, through store
errors too, and take over when the leader's lock goes. A leader proves it still holds
the lock every heartbeat and again each time it looks for due jobs; the moment it
cannot, it stops running jobs and stands by itself.

Jobs live in the store (SQLAlchemyJobStore). Register them in a `register_jobs(scheduler)`
of your module (called below) with `scheduler.add_job("module:function", ..., id=...,
replace_existing=True)`: a stable id, so a restart replaces rather than duplicates, and a
run that fell due while no scheduler ran still happens, once, on the next start.
"""
from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime
from typing import Callable

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING

from app.config import settings
from app.db import engine, session_scope
from app.leader import Lease, lease_for

log = logging.getLogger("airlock.scheduler")

RETRY_SECONDS = 1.0
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}


def expire_reviews_job() -> None:
    from app import approvals

    with session_scope() as s:
        expired = approvals.expire_reviews(s)
    if expired:
        log.info("expired reviews %s", expired)


def register_jobs(scheduler: BackgroundScheduler) -> None:
    """Every job of every module; jobs are added by text reference with stable ids."""
    scheduler.add_job("app.scheduler:expire_reviews_job", "interval", seconds=10,
                      id="expire-reviews", replace_existing=True)
    # Sessions whose process died with them open (a host lost): sealed as ended abnormally.
    scheduler.add_job("app.recording_seal:seal_orphans", "interval", seconds=15,
                      id="seal-orphaned-recordings", replace_existing=True)
    from app.slack.notifier import register_jobs as slack_jobs  # posts reviews, keeps messages true

    slack_jobs(scheduler)
    from app.campaigns import register_jobs as campaign_jobs

    campaign_jobs(scheduler)


class FencedScheduler(BackgroundScheduler):
    """Looks for due jobs only after proving leadership, so a leader that lost its lock
    neither runs a job nor moves a job's next run time in the shared store."""

    def __init__(self, fence: Callable[[], bool], **kwargs) -> None:
        super().__init__(**kwargs)
        self._fence = fence
        # One pass over due jobs at a time, and none once shutting down began: a pass
        # that already proved leadership finishes before the executor goes away.
        self._turn = threading.Lock()
        self._closing = False

    def _process_jobs(self):  # APScheduler 3's one place that starts due jobs
        with self._turn:
            if self._closing or (self.state == STATE_RUNNING and not self._fence()):
                return None  # sleep until shut down: the leader loop is stepping down
            try:
                return super()._process_jobs()
            except Exception as exc:
                # APScheduler lets a store error here end its thread, which would leave a
                # leader that holds the lock and runs nothing. Look again shortly instead.
                log.warning("looking for due jobs failed (%s); retrying", type(exc).__name__)
                return RETRY_SECONDS

    def shutdown(self, wait: bool = True) -> None:
        with self._turn:
            self._closing = True
        super().shutdown(wait=wait)


def _keep_missed_runs(scheduler: BackgroundScheduler, before: dict[str, tuple[str, datetime | None]]) -> None:
    """`replace_existing` computes a job's next run from now, which would silently drop a
    run that fell due while no scheduler ran. Put the stored time back when the trigger is
    unchanged: on resume such a job runs once (coalesced), then on its schedule."""
    for job in scheduler.get_jobs():
        trigger, due = before.get(job.id, (None, None))
        if trigger == str(job.trigger) and due is not None and job.next_run_time and due < job.next_run_time:
            scheduler.modify_job(job.id, next_run_time=due)


def _lead(lease: Lease, stop: threading.Event, heartbeat: float) -> None:
    lost = threading.Event()

    def fence() -> bool:
        if lease.holds():
            return True
        lost.set()
        return False

    scheduler = FencedScheduler(fence, jobstores={"default": SQLAlchemyJobStore(engine=engine())},
                                job_defaults=JOB_DEFAULTS, timezone="UTC")
    scheduler.start(paused=True)
    try:
        before = {j.id: (str(j.trigger), j.next_run_time) for j in scheduler.get_jobs()}
        register_jobs(scheduler)
        _keep_missed_runs(scheduler, before)
        if not fence():
            return
        scheduler.resume()
        log.info("scheduler running (leader)")
        while not stop.wait(heartbeat):
            if lost.is_set() or not fence():
                break
    finally:
        if lost.is_set():
            log.warning("lost the scheduler lock: stopped running jobs; standing by")
            scheduler.shutdown(wait=False)
        else:
            scheduler.shutdown(wait=True)


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(levelname)s %(message)s")
    cfg = settings()
    # APScheduler logs every routine run at INFO ("Running job", "executed successfully"),
    # burying the admin password and real problems; a failing job still logs at ERROR.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    lease = lease_for(cfg)
    standing_by = False
    while not stop.is_set():
        try:
            acquired = lease.try_acquire()
        except Exception as exc:
            # A standby outlives store outages: it keeps trying until the store is back.
            log.warning("store unavailable while waiting for the scheduler lock (%s); retrying", type(exc).__name__)
            acquired = False
            standing_by = False
        if not acquired:
            if not standing_by:
                log.info("another scheduler holds the lock (or the store is down); standing by")
                standing_by = True
            stop.wait(cfg.scheduler_heartbeat_seconds)
            continue
        standing_by = False
        log.info("acquired the scheduler lock")
        try:
            _lead(lease, stop, cfg.scheduler_heartbeat_seconds)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else ""
            log.warning("scheduler failed while leading (%s: %s); stepping down", type(exc).__name__, reason)
        finally:
            lease.release()
    log.info("scheduler stopped")
