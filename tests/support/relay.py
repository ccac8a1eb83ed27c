"""What the relay suites (tests/integration/{postgres,mysql,ssh}) share: a suite store
seeded from a policy with tokens, `airlock relay` in a subprocess on free ports, the
recorded events of a protocol, and polling for a positive signal.

Each suite's conftest keeps what is its own (the target server, the policy, its clients)
and builds on these."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

import pytest

from app.db import session_scope
from app.identity import issue_token
from app.inventory import apply_policy
from app.policy import load_policy
from tests.conftest import use_store
from tests.support import processes

ROOT = Path(__file__).resolve().parents[2]
# Every listener on a free port: a relay started for one protocol must not collide with
# another suite's relay (or a second relay of the same test) on a fixed one.
FREE_PORTS = {"AIRLOCK_POSTGRES_PORT": "0", "AIRLOCK_MYSQL_PORT": "0", "AIRLOCK_SSH_PORT": "0"}

T = TypeVar("T")


@dataclass
class Relay:
    host: str
    port: int
    proc: subprocess.Popen
    env: dict[str, str]
    log: list[str] = field(default_factory=list)
    known_hosts: Path | None = None  # SSH: the relay's host key pinned as a runtime would

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(policy: str, environ: Mapping[str, str], accounts: Iterable[str]) -> tuple[dict[str, str], dict[str, int]]:
    """Apply `policy` to the current store and issue a two-hour token to each account:
    returns the tokens and their ids by account name."""
    tokens, ids = {}, {}
    with session_scope() as s:
        apply_policy(s, load_policy(policy), actor="test", environ=dict(environ))
        for name in accounts:
            issued = issue_token(s, name, timedelta(hours=2))
            tokens[name], ids[name] = issued.token, issued.id
    return tokens, ids


def start_relay(protocol: str, env: Mapping[str, str], **extra: str) -> Relay:
    """`airlock relay` in a subprocess, every listener on a free port; returns once its
    `protocol` listener has said where it listens. Its stderr is kept for failures."""
    full = {**os.environ, **env, **FREE_PORTS, **extra}
    proc = processes.popen([sys.executable, "-m", "app.cli", "relay"], cwd=ROOT, env=full,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    relay = Relay("127.0.0.1", 0, proc, full)
    ready = threading.Event()
    listening = re.compile(rf"{protocol} relay listening on \S+:(\d+)")

    def drain() -> None:
        for line in proc.stderr:
            relay.log.append(line.rstrip())
            m = listening.search(line)
            if m:
                relay.port = int(m.group(1))
                ready.set()
        ready.set()  # the relay exited: stop waiting for it

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(30) or not relay.port:
        processes.kill(proc)
        pytest.fail(f"the relay did not start ({protocol}):\n{relay.tail()}")
    return relay


def stop_relay(relay: Relay) -> None:
    processes.stop(relay.proc)  # SIGTERM; its workers and recording writers too if it does not stop


def running(relay: Relay) -> Iterator[Relay]:
    """For a session fixture: yields the relay and stops it after."""
    try:
        yield relay
    finally:
        stop_relay(relay)


@pytest.fixture(autouse=True)
def _store(request):
    """A test of a relay suite talks to that suite's store (others may have pointed this
    process elsewhere); conftests import this fixture."""
    if "world" in request.fixturenames or "relay" in request.fixturenames:
        use_store(request.getfixturevalue("world").env)
    yield


def events(protocol: str, session_filter: Callable | None = None) -> list[tuple]:
    """All recorded events of `protocol` sessions, oldest first, as (session, kind, data)."""
    from sqlalchemy import select

    from app.models import RecordedSession, SessionEvent

    with session_scope() as s:
        rows = s.execute(select(RecordedSession, SessionEvent)
                         .join(SessionEvent, SessionEvent.session_id == RecordedSession.id)
                         .where(RecordedSession.protocol == protocol)
                         .order_by(RecordedSession.started_at, SessionEvent.seq)).all()
        return [(r, e.kind, json.loads(e.data)) for r, e in rows if session_filter is None or session_filter(r)]


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll `predicate` until it is truthy or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
