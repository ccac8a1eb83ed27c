"""`airlock up`: run every process of the embedded default and keep them running.

Each process is a child `airlock NAME`. A child that dies is restarted with backoff,
except one that exits with CONFIG_ERROR (a port in use, an uninitialised home, a bad
setting): restarting cannot fix that, so everything stops and `up` exits with it.
Ctrl-C or SIGTERM stops them all, politely first.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from app.preflight import CONFIG_ERROR

# (name, module that must exist for the process to be available)
PROCESSES: tuple[tuple[str, str], ...] = (
    ("portal", "app.portal"),
    ("proxy", "app.proxy"),
    ("relay", "app.relay.server"),
    ("scheduler", "app.scheduler"),
)
STOP_GRACE = 10.0
BANNER_WAIT = 30.0  # show the banner once every port answers, or after this long anyway


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
    config_failed = False
    banner_due = time.monotonic() + BANNER_WAIT

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
            if code == CONFIG_ERROR:
                # The child said why on stderr; the same settings would fail the same way.
                print(f"airlock up: {child.name} cannot run with this configuration (see above); "
                      "stopping everything", flush=True)
                child.proc, config_failed, stopping = None, True, True
                break
            child.restarts += 1
            delay = min(30.0, 0.5 * 2 ** child.restarts)
            print(f"airlock up: {child.name} exited with {code}; restarting in {delay:.1f}s", flush=True)
            child.proc, child.next_start = None, now + delay
        if not stopping and banner_due and (_listening(children) or now > banner_due):
            print(banner(), flush=True)
            banner_due = 0.0
        if not stopping:
            time.sleep(0.2)
    _stop_all(children)
    return CONFIG_ERROR if config_failed else 0


def _stop_all(children: list[Child]) -> None:
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


def _listening(children: list[Child]) -> bool:
    from app.config import settings
    from app.preflight import listeners

    cfg = settings()
    host = "127.0.0.1" if cfg.bind in ("0.0.0.0", "::", "") else cfg.bind
    ports = [listeners(cfg)[c.name].port for c in children if c.name in listeners(cfg)]
    for port in ports:
        if port == 0:
            continue
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            return False
    return True


def banner() -> str:
    """What a new user needs next, after the children's start-up lines."""
    from sqlalchemy import select

    from app.ca import ca_cert_path
    from app.config import settings
    from app.db import session_scope
    from app.models import User

    cfg = settings()
    try:
        with session_scope() as s:
            admins = sorted(u.email for u in s.scalars(select(User)) if "admin" in (u.roles or []) and u.active)
    except Exception:  # noqa: BLE001 - the banner must never take the supervisor down
        admins = []
    cli = "airlock" if os.path.dirname(sys.executable) in os.environ.get("PATH", "").split(os.pathsep) \
        else os.path.join(os.path.relpath(os.path.dirname(sys.executable)), "airlock")
    return "\n".join([
        "",
        "airlock is up.",
        f"  portal     {cfg.public_url}",
        f"  sign in    {admins[0] if admins else 'admin@localhost'} with the password `airlock init` printed "
        "when it created the admin",
        f"  CA         {ca_cert_path(cfg.ca_dir)} (runtimes trust it; `airlock env` points them at it)",
        "  next       1. describe service accounts, connections and grants, then apply them:",
        f"                {cli} apply -f policy.yaml",
        "             2. point a runtime at airlock (issues a token, prints the variables to set):",
        f"                eval \"$({cli} env SERVICE_ACCOUNT)\"",
        "  Ctrl-C stops everything.",
        "",
    ])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_all())
