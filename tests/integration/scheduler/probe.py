"""`python -m tests.integration.scheduler.probe`: `airlock scheduler` exactly as the CLI runs
it, plus one job that records which process ran it and when (the job's start time)."""
from __future__ import annotations

import logging
import os
import sys
import time

from sqlalchemy import text

from app import scheduler
from app.db import session_scope


def tick() -> None:
    started = time.time()
    with session_scope() as s:
        s.execute(text("INSERT INTO probe_runs (pid, at) VALUES (:pid, :at)"), {"pid": os.getpid(), "at": started})


def main() -> None:
    register = scheduler.register_jobs

    def register_with_probe(sched) -> None:
        # The scheduler keeps APScheduler's routine lines out of its log; the tests read
        # its "Running job ... (scheduled at ...)" lines, so this probe brings them back.
        logging.getLogger("apscheduler.executors").setLevel(logging.INFO)
        register(sched)
        sched.add_job("tests.integration.scheduler.probe:tick", "interval",
                      seconds=float(os.environ["PROBE_INTERVAL"]), id="probe", replace_existing=True)

    scheduler.register_jobs = register_with_probe
    from app.cli import main as cli

    sys.argv = ["airlock", "scheduler"]
    cli()


if __name__ == "__main__":
    main()
