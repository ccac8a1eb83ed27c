"""Real scheduler processes on a real store, and what they ran."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import db

ROOT = Path(__file__).resolve().parents[3]
HEARTBEAT = 0.3
LEASE = 2.0
PROBE_INTERVAL = 0.2


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 20.0, every: float = 0.05) -> float:
    """Seconds it took for `cond` to hold; fails the test after `timeout`."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


@dataclass
class Proc:
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def logged(self, what: str) -> list[float]:
        """When this scheduler logged a line containing `what` (epoch seconds)."""
        return [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                for line in self.output().splitlines() if what in line]

    def stepped_down(self) -> list[float]:
        return self.logged("lost the scheduler lock")


class Schedulers:
    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp, self.url = tmp, url
        self.procs: list[Proc] = []
        with db.engine().begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS probe_runs"))
            conn.execute(text("CREATE TABLE probe_runs (pid INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL)"))

    def start(self, interval: float = PROBE_INTERVAL) -> Proc:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PROBE_INTERVAL=str(interval),
                   AIRLOCK_SCHEDULER_HEARTBEAT_SECONDS=str(HEARTBEAT), AIRLOCK_SCHEDULER_LEASE_SECONDS=str(LEASE),
                   AIRLOCK_STORE_CONNECT_TIMEOUT="2", AIRLOCK_STORE_STATEMENT_TIMEOUT="2")
        log = self.tmp / f"scheduler-{len(self.procs)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "tests.integration.scheduler.probe"], cwd=ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(popen, log)
        self.procs.append(proc)
        return proc

    def runs(self) -> list[tuple[float, int]]:
        """(start time, pid) of every probe run so far, in order."""
        for attempt in range(50):
            try:
                with db.engine().connect() as conn:
                    return [(at, pid) for pid, at in conn.execute(text("SELECT pid, at FROM probe_runs ORDER BY at"))]
            except Exception:  # our own connections die in a blip too
                time.sleep(0.1)
        raise AssertionError("could not read probe_runs")

    def runs_by(self, proc: Proc, after: float = 0.0) -> int:
        return sum(1 for at, pid in self.runs() if pid == proc.pid and at > after)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.popen.wait()


def leaders_in_order(runs: list[tuple[float, int]]) -> list[int]:
    """The pids that ran jobs, one entry per unbroken stretch: [A, B] is a handover,
    [A, B, A] or longer alternations mean two schedulers ran at once."""
    order: list[int] = []
    for _, pid in runs:
        if not order or order[-1] != pid:
            order.append(pid)
    return order


def assert_handovers(runs: list[tuple[float, int]], procs: list[Proc]) -> None:
    """Jobs never run on two schedulers at once. When the runner changes from x to y, the
    lock moved: y holds it, so x's lock session is gone and x can prove nothing. x must
    then step down, and run no job after y took over until it has stepped down (it may
    lead again later). x logs its step-down when its next proof fails, which can be a
    moment after y's first run; the order of the two runs is what shows the hand-over."""
    by_pid = {p.pid: p for p in procs}
    for i, ((t1, x), (t2, y)) in enumerate(zip(runs, runs[1:])):
        if x != y:
            downs = [d for d in by_pid[x].stepped_down() if d >= t1 - 0.01]
            assert downs, f"{x} ran its last job at {t1} and never stepped down, while {y} ran one at {t2}"
            later = [t for t, pid in runs[i + 2:] if pid == x]
            assert not later or later[0] >= downs[0], (
                f"{x} ran a job at {later[0]} after {y} took over at {t2}, before it stepped down at {downs[0]}")


@pytest.fixture
def schedulers(tmp_path, store):
    s = Schedulers(tmp_path, store)
    yield s
    s.stop_all()


@pytest.fixture
def pg_schedulers(tmp_path, pg_store):
    s = Schedulers(tmp_path, pg_store)
    yield s
    s.stop_all()


class Blip:
    """Terminate every connection to the store's database, again and again, for `seconds`."""

    def __init__(self, url: str) -> None:
        self.dbname = make_url(url).database

    def run(self, seconds: float, only: str | None = None) -> None:
        end = time.monotonic() + seconds
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
            while True:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                    " AND pid <> pg_backend_pid() AND (%s::int IS NULL OR pid = %s::int)",
                    (self.dbname, only, only))
                if time.monotonic() >= end:
                    return
                time.sleep(0.05)

    def lock_holder(self) -> int | None:
        """The backend pid holding the scheduler's advisory lock in this database."""
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
            row = conn.execute(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = %s AND l.objid = %s",
                (self.dbname, 0x41_49_52_4C)).fetchone()
            return row[0] if row else None
