"""`airlock up`: run every process of the embedded default and keep them running.

Each process is a child `airlock NAME`. A child that dies is restarted with backoff;
Ctrl-C or SIGTERM stops them all, politely first.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

# (name, module that must exist for the process to be available)
PROCESSES: tuple[tuple[str, str], ...] = (
    ("portal", "app.portal"),
    ("proxy", "app.proxy"),
    ("relay", "app.relay.server"),
    ("scheduler", "app.scheduler"),
)
STOP_GRACE = 10.0


def available() -> list[str]:
    return [name for name, module in PROCESSES if importlib.util.find_spec(module) is not None]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", self.name])
        self.started = time.monotonic()
        print(f"airlock up: started {self.name} (pid {self.proc.pid})", flush=True)


def run_all(names: list[str] | None = None) -> int:
    children = [Child(n) for n in (names or available())]
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.start()
    while not stopping:
        now = time.monotonic()
        for child in children:
            if child.proc is None:
                if now >= child.next_start:
                    child.start()
                continue
            code = child.proc.poll()
            if code is None:
                if now - child.started > 60:
                    child.restarts = 0  # it stayed up: forget old crashes
                continue
            child.restarts += 1
            delay = min(30.0, 0.5 * 2 ** child.restarts)
            print(f"airlock up: {child.name} exited with {code}; restarting in {delay:.1f}s", flush=True)
            child.proc, child.next_start = None, now + delay
        time.sleep(0.2)
    return _stop_all(children)


def _stop_all(children: list[Child]) -> int:
    print("airlock up: stopping", flush=True)
    live = [c for c in children if c.proc is not None and c.proc.poll() is None]
    for child in live:
        child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for child in live:
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"airlock up: {child.name} did not stop in time; killing it", flush=True)
            child.proc.kill()
            child.proc.wait()
    print("airlock up: stopped", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_all())
