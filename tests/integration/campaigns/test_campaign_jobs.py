"""The scheduler's access-review jobs: registered by text reference with stable ids."""
from __future__ import annotations

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from app.db import engine
from app.scheduler import JOB_DEFAULTS, register_jobs


def test_jobs_are_registered_once_by_reference(sqlite_store):
    counts = []
    for _ in range(2):  # a restart replaces the jobs, never duplicates them
        scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(engine=engine())},
                                        job_defaults=JOB_DEFAULTS, timezone="UTC")
        register_jobs(scheduler)
        scheduler.start(paused=True)
        jobs = {j.id: j for j in scheduler.get_jobs()}
        counts.append(len(scheduler.get_jobs()))
        scheduler.shutdown(wait=False)
    assert {"campaigns", "access-requests", "usage-summaries", "housekeeping"} <= set(jobs)
    assert jobs["campaigns"].func_ref == "app.campaigns.jobs:campaigns_tick"
    assert jobs["access-requests"].func_ref == "app.campaigns.jobs:access_requests_tick"
    assert jobs["housekeeping"].func_ref == "app.campaigns.jobs:housekeeping_tick"
    assert counts[0] == counts[1] == len(jobs)
