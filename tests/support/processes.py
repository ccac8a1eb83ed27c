"""Server subprocesses of the tests (`airlock proxy`, `relay`, `portal`, ...): each starts
in a process group of its own, and `stop` ends the whole group, always.

A proxy or relay forks workers, and each relay worker starts a recording writer. A
parent that is killed (because it did not stop in time) leaves those running: they
still hold the port's socket and the store, and nothing would ever stop them. So a
polite signal goes to the parent first (it stops its own children and lets them write
what they hold), and whatever of its group is still there after `grace` is killed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

GRACE = 15.0


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen in a new session: the child leads a process group of its own,
    which every process it starts joins (unless it starts its own session)."""
    return subprocess.Popen(args, start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen, grace: float = GRACE, signum: int = signal.SIGTERM) -> None:
    """Stop `proc` (started by `popen`) and everything of its process group.

    `signum` goes to `proc` alone, as an operator's would; if it has not ended after
    `grace`, the whole group is killed. Then its descendants get `grace` to finish (a
    recording writer seals what it holds after its parent is gone), and are killed if
    they have not. Returns once nothing of the group runs."""
    group = proc.pid  # popen made it a group leader; the group outlives it while members remain
    if proc.poll() is None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            proc.wait()
    if wait_group_gone(group, grace):
        _signal_group(group, signal.SIGKILL)
        if wait_group_gone(group, 10.0):
            raise RuntimeError(f"process group {group} of {proc.args!r} survived SIGKILL")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and its whole group at once (a start that failed)."""
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_group_gone(proc.pid, 10.0)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass


def wait_group_gone(group: int, timeout: float) -> list[int]:
    """Wait up to `timeout` until no process of `group` is left; returns the pids left
    (zombies not yet reaped by their new parent count as gone: they hold nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        left = group_members(group)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def group_members(group: int) -> list[int]:
    """The live processes of process group `group`."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return []
    except PermissionError:  # not ours: cannot be a group we started
        return []
    return [pid for pid, fields in live_processes() if int(fields[2]) == group]


def live_processes():
    """(pid, the fields of /proc/PID/stat after "pid (comm) ") of every live process:
    fields[1] is the parent's pid, fields[2] the process group."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None:
                yield int(entry.name), fields


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after "pid (comm) ", or None once it is gone (a
    zombie holds nothing: it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return None if fields[0] == b"Z" else fields
