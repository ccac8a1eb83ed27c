"""Exactly one `airlock scheduler` runs jobs: through SIGKILL, SIGSTOP and store blips on
the real PostgreSQL, and on SQLite through SIGKILL; missed runs are coalesced."""
from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime

from tests.integration.scheduler.conftest import HEARTBEAT, LEASE, Blip, assert_handovers, leaders_in_order, wait_for


BLIP_SECONDS = 10.0  # as in the report: the store's connections terminated for 10 s


def _leading(schedulers):
    """Start two schedulers; the first one leads, the second stands by."""
    a = schedulers.start()
    wait_for("the first scheduler to run a job", lambda: schedulers.runs_by(a) >= 2)
    b = schedulers.start()
    wait_for("the second scheduler to stand by", lambda: "standing by" in b.output())
    return a, b


def test_second_scheduler_stands_by_and_takes_over_after_sigkill(schedulers):
    a, b = _leading(schedulers)
    # The standby's chances to run (one lock try a heartbeat) are counted in the leader's
    # runs, not in a sleep a loaded machine may not give either process any time in.
    before = schedulers.runs_by(a)
    wait_for("the leader to run six more jobs", lambda: schedulers.runs_by(a) >= before + 6)
    assert schedulers.runs_by(b) == 0, "the standby ran jobs while the leader held the lock"
    os.killpg(a.pid, signal.SIGKILL)
    killed = time.time()
    took = wait_for("the standby to take over", lambda: schedulers.runs_by(b) >= 3)
    assert took < LEASE + 5
    assert leaders_in_order(schedulers.runs()) == [a.pid, b.pid]
    assert schedulers.runs_by(a, after=killed) == 0


def test_hung_leader_loses_the_lock_and_stops_running_jobs_when_it_wakes(pg_schedulers):
    s = pg_schedulers
    a, b = _leading(s)
    os.killpg(a.pid, signal.SIGSTOP)
    # The server ends the stopped leader's idle lock session after the lease.
    took = wait_for("the standby to take over from a stopped leader", lambda: s.runs_by(b) >= 2)
    assert took < LEASE + 5
    os.killpg(a.pid, signal.SIGCONT)
    woke = time.time()
    wait_for("the woken leader to step down", lambda: "lost the scheduler lock" in a.output())
    wait_for("the new leader to run on past the old one's wake", lambda: s.runs_by(b, after=woke + 4 * HEARTBEAT) >= 2)
    assert a.popen.poll() is None, a.output()
    assert s.runs_by(a, after=woke) == 0, "the woken leader ran a job after losing the lock"
    assert leaders_in_order(s.runs()) == [a.pid, b.pid]
    assert s.runs_by(b, after=woke + 4 * HEARTBEAT) >= 2


def test_leader_whose_lock_session_is_killed_stops_at_once(pg_schedulers):
    """The original failure: the lock's connection went away and the leader kept running jobs."""
    s = pg_schedulers
    a, b = _leading(s)
    blip = Blip(s.url)
    holder = blip.lock_holder()
    assert holder is not None
    blip.run(0, only=holder)
    wait_for("the leader to notice", lambda: "lost the scheduler lock" in a.output())
    noticed = time.time()
    wait_for("ten job runs after", lambda: len([1 for at, _ in s.runs() if at > noticed]) >= 10)
    order = leaders_in_order(s.runs())
    # Either the standby took over, or the old leader won the lock back; never both at once.
    assert order in ([a.pid], [a.pid, b.pid]), (order, a.pid, b.pid)
    assert_handovers(s.runs(), s.procs)
    assert a.popen.poll() is None and b.popen.poll() is None
    assert blip.lock_holder() is not None


def test_store_blip_leaves_exactly_one_scheduler_and_the_standby_alive(pg_schedulers):
    s = pg_schedulers
    a, b = _leading(s)
    blip = Blip(s.url)
    blip.run(BLIP_SECONDS)
    ended = time.time()
    wait_for("a scheduler to run jobs again", lambda: len([1 for at, _ in s.runs() if at > ended]) >= 3)
    wait_for("eight more job runs", lambda: len([1 for at, _ in s.runs() if at > ended]) >= 11)
    assert a.popen.poll() is None, a.output()
    assert b.popen.poll() is None, b.output()
    for p in (a, b):  # jobs may fail in the blip; the scheduler's own threads must not
        assert "Exception in thread" not in p.output(), p.output()
    # Leadership may change hands more than once while connections keep dying, but
    # only ever from a scheduler that had stepped down.
    assert_handovers(s.runs(), s.procs)
    after = {pid for at, pid in s.runs() if at > ended}
    assert len(after) == 1, after
    assert blip.lock_holder() is not None


def test_missed_runs_run_once_on_restart(schedulers):
    a = schedulers.start(interval=2.0)
    wait_for("the first run", lambda: schedulers.runs_by(a) >= 1, timeout=30)
    a.popen.send_signal(signal.SIGTERM)
    a.popen.wait(10)
    assert "scheduler stopped" in a.output()
    time.sleep(5)  # two or three runs fall due while no scheduler runs
    b = schedulers.start(interval=2.0)
    wait_for("the missed run", lambda: schedulers.runs_by(b) >= 1, timeout=30)
    started = b.logged("scheduler running (leader)")[0]
    first = [at for at, pid in schedulers.runs() if pid == b.pid][0]
    # Without coalescing and the stored next run time, the first run would come a full
    # interval after the start (or several runs would come at once).
    assert first - started < 1.5, first - started
    # Every run that fell due while no scheduler ran, folded into one.
    due = [datetime.fromisoformat(m).timestamp()
           for m in re.findall(r'Running job "tick .*\(scheduled at ([^)]+)\)', b.output())]
    assert len([t for t in due if t < started]) == 1, due
