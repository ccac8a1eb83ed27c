"""Processes the test run started and did not stop.

Every process a test starts inherits TAG in its environment (it is set in this process
at start-up, and tests pass `{**os.environ, ...}` on), and keeps it even when its parent
dies and it is re-parented to init: /proc/PID/environ is the environment it started
with. A child started with a scrubbed environment still shows as this process's child.
So what `survivors` finds is ours, not another test run's on the same machine.

Reading /proc is Linux-only, as is CI; elsewhere the guard finds nothing.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

VARIABLE = "PYTEST_AIRLOCK_RUN"  # not AIRLOCK_*: fixtures clear those from the environment


_NOT_OURS: dict[str, set[tuple[int, int]]] = {}

# Helpers that Python starts for the pytest process itself and that end with it (they
# read a pipe from it): not a test's leftovers. multiprocessing's resource tracker is
# started by the first shared array or semaphore, and lives as long as the run.
_LIFETIME_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


@dataclass(frozen=True)
class Proc:
    pid: int
    started: int  # clock ticks after boot: with the pid, names one process for good
    cmdline: str

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.cmdline}"


def install() -> str:
    """Tag this process's environment (inherited by every child from now on)."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # a new one: a run started by a test is a run of its own
    os.environ[VARIABLE] = tag
    return tag


def survivors(tag: str, quick: bool = False) -> list[Proc]:
    """Live processes (not zombies) that carry `tag` or are children of this process.

    `quick` skips the pids already found not to be ours (a pid reused by one of ours
    meanwhile would be missed: fine between modules, not for the final check)."""
    if not os.path.isdir("/proc/self"):
        return []
    me, marker = os.getpid(), f"{VARIABLE}={tag}".encode()
    found = []
    not_ours = _NOT_OURS.setdefault(tag, set())
    skip = {pid for pid, _ in not_ours} if quick else set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me or int(name) in skip:
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "
            if fields[0] == b"Z":
                continue
            started = int(fields[19])
            ours = int(fields[1]) == me
            if not ours:
                if (pid, started) in not_ours:
                    continue
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        ours = marker in f.read().split(b"\0")
                except (PermissionError, ProcessLookupError):  # another user's, or a kernel thread
                    ours = False
            if not ours:
                not_ours.add((pid, started))  # its environment cannot change: not read again
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours to read
            continue
        if int(fields[1]) == me and any(helper in cmdline for helper in _LIFETIME_HELPERS):
            continue
        found.append(Proc(pid, started, cmdline or stat.split(b" ", 2)[1].decode(errors="replace")))
    return found


def wait_for_exit(tag: str, timeout: float) -> list[Proc]:
    """What of `survivors` is still there after up to `timeout` (processes told to stop
    may take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        left = survivors(tag)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
