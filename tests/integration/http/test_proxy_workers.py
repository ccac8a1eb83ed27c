"""`airlock proxy` with a worker per core: every worker serves the one port, and a
worker killed with a tunnel open lets nothing through and leaves its recording sealed."""
from __future__ import annotations

import os
import signal
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from app import audit
from app.db import session_scope
from app.models import RecordedSession
from app.recording_seal import ABNORMAL

from .clients import basic, tunnel_tls
from .conftest import start_proxy, stop_proxy
from .rawhttp import read_reply


@pytest.fixture
def two_workers(world, tmp_path):
    proxy = start_proxy({**world.env, "AIRLOCK_PROXY_WORKERS": "2"}, tmp_path / "proxy.log")
    # The parent's socket takes connections as soon as it is bound; wait for both workers.
    assert _wait(lambda: proxy.log.read_bytes().count(b"accepting") >= 2, timeout=30), proxy.tail()
    yield proxy
    stop_proxy(proxy)


def _owners(since) -> dict[str, str]:
    with session_scope() as s:
        rows = s.execute(select(RecordedSession.id, RecordedSession.owner)
                         .where(RecordedSession.protocol == "http", RecordedSession.started_at >= since)).all()
    return {sid: owner for sid, owner in rows}


def _wait(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_both_workers_serve_the_port(two_workers, agent, api):
    from app.models import utcnow

    since = utcnow()
    for i in range(16):  # a new connection each time: the kernel spreads them
        with two_workers.httpx(agent) as client:
            assert client.get(f"{api}/workers/{i}").status_code == 200
    owners = _wait(lambda: (o := _owners(since)) and len(o) >= 16 and o)
    pids = {owner.split(":")[1] for owner in owners.values()}
    assert len(pids) == 2, pids
    assert str(two_workers.proc.pid) not in pids  # the parent only supervises


def test_tunnels_held_open_are_spread_evenly(two_workers, agent, api):
    """Tunnels that open one after another and stay open (as runtimes keep them) end up
    half on each worker: a busier worker lets the quieter one accept. (SO_REUSEPORT's
    hash, used before, split them 6/2, 5/3 and 5/3 in three runs of this test.)"""
    from app.models import utcnow

    since = utcnow()
    clients = [two_workers.httpx(agent) for _ in range(8)]
    try:
        for i, client in enumerate(clients):
            assert client.get(f"{api}/spread/{i}").status_code == 200
        owners = _wait(lambda: (o := _owners(since)) and len(o) >= 8 and o)
    finally:
        for client in clients:
            client.close()
    per_worker = Counter(owner.split(":")[1] for owner in owners.values())
    assert sorted(per_worker.values()) == [4, 4], per_worker


def test_a_killed_worker_lets_nothing_through_and_its_session_is_sealed(two_workers, agent, api, world):
    from app.models import utcnow

    since = utcnow()
    # A raw tunnel, not an httpx client: httpx's pool would notice the dead connection and
    # open a new tunnel through the other worker, which is allowed and not what this tests.
    host = f"localhost:{world.upstream.port}"
    tls = tunnel_tls(two_workers.port, two_workers.ca, "localhost", world.upstream.port, basic("agent", agent))
    tls.settimeout(20)
    with tls:
        tls.sendall(f"GET /killed/before HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert read_reply(tls).status == 200
        owners = _wait(lambda: _owners(since))
        (sid, owner), = owners.items()
        os.kill(int(owner.split(":")[1]), signal.SIGKILL)
        try:  # the same tunnel, its worker gone: no answer at all
            tls.sendall(f"GET /killed/after HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status = read_reply(tls).status
        except OSError:  # reset, or a TLS error: the connection is dead
            status = 0
    assert status == 0
    assert not world.upstream.requests_to("/killed/after")
    sealed = _wait(lambda: (r := _session(sid)) is not None and r.ended_at is not None and r)
    assert sealed and sealed.meta["ended"] == ABNORMAL and sealed.digest
    with session_scope() as s:
        assert audit.verify(s).ok
    deadline = time.monotonic() + 15
    while True:  # the port is served on: by the other worker, then by the restarted one
        try:
            with two_workers.httpx(agent) as again:
                assert again.get(f"{api}/killed/again").status_code == 200
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def _session(sid: str) -> RecordedSession | None:
    with session_scope() as s:
        return s.get(RecordedSession, sid)


def test_a_stopped_worker_writes_what_it_recorded(world, tmp_path, agent, api):
    """Workers leave with os._exit: the last second of recordings must be written first."""
    from app.models import SessionEvent

    proxy = start_proxy({**world.env, "AIRLOCK_PROXY_WORKERS": "2", "AIRLOCK_RECORD_FLUSH_SECONDS": "1"},
                        tmp_path / "proxy.log")
    marker = f"stopped-{os.getpid()}-{time.monotonic_ns()}"
    client = proxy.httpx(agent)
    try:
        assert client.get(f"{api}/{marker}").status_code == 200
    finally:
        stop_proxy(proxy)  # at once, the tunnel still open: well within the one-second flush
        client.close()
    with session_scope() as s:
        found = s.scalar(select(SessionEvent.id).where(SessionEvent.data.contains(marker)).limit(1))
    assert found is not None, "the last exchange of a stopped worker was never written"
