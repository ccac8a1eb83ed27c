"""tests/support/processes.py: a stopped server leaves nothing of its process group behind."""
from __future__ import annotations

import os
import subprocess
import time


from tests.support import leaks, processes


def _started(proc: subprocess.Popen, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(members := processes.group_members(proc.pid)) < count:
        assert time.monotonic() < deadline, members
        time.sleep(0.02)
    return members


def test_a_parent_that_ignores_sigterm_is_killed_with_its_children():
    proc = processes.popen(["sh", "-c", "trap '' TERM; sleep 300 & sleep 301 & wait"])
    _started(proc, 3)
    began = time.monotonic()
    processes.stop(proc, grace=0.5)
    assert processes.group_members(proc.pid) == []
    assert time.monotonic() - began < 8


def test_children_a_stopped_parent_leaves_behind_are_ended_too():
    proc = processes.popen(["sh", "-c", "sleep 300 & exec sleep 301"])  # the leader obeys SIGTERM; its child not told
    _started(proc, 2)
    processes.stop(proc, grace=0.5)
    assert proc.returncode is not None
    assert processes.group_members(proc.pid) == []


def _orphan(env: dict[str, str]) -> int:
    """A `sleep` whose parent has exited (re-parented away from this process)."""
    made = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                          env=env, check=True)
    return int(made.stdout)


def test_the_leak_guard_finds_our_orphans_and_children_and_nothing_else():
    tag = os.environ[leaks.VARIABLE]  # the run's own (tests/conftest.py)
    ours = _orphan(dict(os.environ))
    foreign = _orphan({"PATH": os.environ["PATH"], leaks.VARIABLE: "another-run"})
    child = subprocess.Popen(["sleep", "302"], env={"PATH": os.environ["PATH"]})  # no tag, but our child
    try:
        found = {p.pid for p in leaks.survivors(tag)}
        assert ours in found and child.pid in found
        assert foreign not in found and os.getpid() not in found
    finally:
        for pid in (ours, foreign):
            os.kill(pid, 9)
        child.kill()
        child.wait()
    deadline = time.monotonic() + 5
    while {ours, child.pid} & {p.pid for p in leaks.survivors(tag)}:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_the_leak_guard_lets_pythons_own_resource_tracker_be():
    """multiprocessing starts its resource tracker for this process (a shared array does)
    and it lives until the run ends: the guard must not call it a test's leftover."""
    import multiprocessing
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    multiprocessing.Array("i", 1, lock=True)
    tracker = resource_tracker._resource_tracker._pid  # the tracker's pid, to be sure it is running
    assert tracker is not None

    def exec_done() -> bool:  # until its exec, a forked child shows pytest's command line
        with open(f"/proc/{tracker}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()

    deadline = time.monotonic() + 10
    while not exec_done():
        assert time.monotonic() < deadline, "the resource tracker never started"
        time.sleep(0.01)
    assert tracker not in {p.pid for p in leaks.survivors(os.environ[leaks.VARIABLE])}
