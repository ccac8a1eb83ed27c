"""A relay worker killed mid-session: its recording is sealed, and tampering shows.

The relay runs two workers; SIGKILL goes to the one whose recorder owns the session
(the session row names it). Its writer child, left behind, seals the session as
ended abnormally with the digest of the events it wrote, and `audit verify` then
catches an edited or a deleted event.
"""
from __future__ import annotations

import os
import signal
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import delete, select, update

from app import audit
from app.db import session_scope
from app.models import AuditEntry, RecordedSession, RecordingOwner, SessionEvent, utcnow
from app.recording_seal import ABNORMAL, orphans, seal_orphans

from tests.support.processes import live_processes, stat_fields

from .conftest import dsn, start_relay, stop_relay, wait_for


def _verify():
    with session_scope() as s:
        return audit.verify(s)


def _session(sid: str) -> RecordedSession:
    with session_scope() as s:
        return s.get(RecordedSession, sid)


def _events(sid: str) -> list[tuple]:
    with session_scope() as s:
        return [tuple(r) for r in s.execute(select(SessionEvent.id, SessionEvent.seq, SessionEvent.data, SessionEvent.t,
                                                   SessionEvent.kind)
                                            .where(SessionEvent.session_id == sid).order_by(SessionEvent.seq))]


@pytest.fixture
def two_workers(world):
    relay = start_relay(world, AIRLOCK_RELAY_WORKERS="2")
    yield relay
    stop_relay(relay)


def test_killed_worker_session_is_sealed_and_tampering_is_caught(world, two_workers, agent):
    relay = two_workers
    conn = psycopg.connect(dsn(relay, agent, application_name="orphan-run"), autocommit=True)
    for i in range(5):
        assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
    sid = wait_for(lambda: _sid_with_events("orphan-run", 5), timeout=10)
    assert sid, "the session's statements never reached the store"
    owner = _session(sid).owner
    pid = int(owner.split(":")[1])
    assert pid != relay.proc.pid  # a worker, not the parent
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()

    sealed = wait_for(lambda: _session(sid).ended_at is not None, timeout=15)
    assert sealed, "the dead worker's session was never sealed"
    row = _session(sid)
    events = _events(sid)
    assert row.meta["ended"] == ABNORMAL
    assert row.event_count == len(events) >= 5  # every statement answered before the kill
    with session_scope() as s:
        assert row.digest == audit.recording_digest(s, sid)
        close = s.scalars(select(AuditEntry).where(AuditEntry.action == "session.close",
                                                   AuditEntry.target == sid)).one()
        assert close.data["ended"] == ABNORMAL and close.data["digest"] == row.digest
    assert _verify().ok

    # The parent restarted the worker: the relay serves again on both.
    with psycopg.connect(dsn(relay, agent), autocommit=True) as again:
        assert again.execute("SELECT 41 + 1").fetchone() == (42,)

    event_id, _, data, _, _ = events[2]
    try:
        with session_scope() as s:
            s.execute(update(SessionEvent).where(SessionEvent.id == event_id).values(data=data.replace("1", "7")))
        result = _verify()
        assert not result.ok and sid in result.reason and "digest" in result.reason
    finally:
        with session_scope() as s:
            s.execute(update(SessionEvent).where(SessionEvent.id == event_id).values(data=data))
    assert _verify().ok
    removed = events[-1]
    try:
        with session_scope() as s:
            s.execute(delete(SessionEvent).where(SessionEvent.id == removed[0]))
        result = _verify()
        assert not result.ok and sid in result.reason
    finally:
        with session_scope() as s:
            # Under a new id (another session may have taken the old one): ids are not digested.
            s.add(SessionEvent(session_id=sid, seq=removed[1], data=removed[2], t=removed[3], kind=removed[4]))
    assert _verify().ok


def _sid_with_events(run_id: str, statements: int) -> str | None:
    with session_scope() as s:
        row = s.scalars(select(RecordedSession).where(RecordedSession.run_id == run_id)
                        .order_by(RecordedSession.started_at.desc())).first()
        if row is None:
            return None
        kinds = s.scalars(select(SessionEvent.kind).where(SessionEvent.session_id == row.id)).all()
        outputs = sum(1 for kind in kinds if kind == "output")
        return row.id if outputs >= statements else None


def test_orphans_of_a_silent_owner_are_reported_then_sealed(world):
    """The lease path: a process gone with its writer (nothing sealed it at once)."""
    owner = f"lost-host:4242:{os.urandom(4).hex()}"
    sid = f"orphan-{os.urandom(6).hex()}"[:36]
    long_ago = utcnow() - timedelta(minutes=20)
    with session_scope() as s:
        s.add(RecordingOwner(id=owner, host="lost-host", pid=4242, started_at=long_ago, heartbeat_at=long_ago))
        s.add(RecordedSession(id=sid, protocol="postgres", connection="app", service_account="agent",
                              started_at=long_ago, owner=owner, meta={}))
        audit.append(s, actor="agent", action="session.open", target=sid,
                     data={"protocol": "postgres", "connection": "app", "client": "127.0.0.1:1"})
        s.flush()
        for seq in (1, 2):
            s.add(SessionEvent(session_id=sid, seq=seq, t=0.1 * seq, kind="input", data='{"sql":"SELECT 1"}'))
    with session_scope() as s:
        assert sid in orphans(s)
    result = _verify()
    assert not result.ok and sid in result.reason and "never sealed" in result.reason
    assert sid in seal_orphans()
    row = _session(sid)
    assert row.ended_at is not None and row.event_count == 2 and row.meta["ended"] == ABNORMAL
    assert _verify().ok
    assert seal_orphans() == []  # sealed once only


def _children(pid: int) -> list[int]:
    return [child for child, fields in live_processes() if int(fields[1]) == pid]


def test_workers_end_with_a_parent_killed_outright(world, two_workers, agent):
    """A supervisor that SIGKILLs a relay that would not stop must not leave its workers
    serving the port on their own, where nothing counts, restarts or stops them."""
    relay = two_workers
    workers = wait_for(lambda: len(_children(relay.proc.pid)) >= 2 and _children(relay.proc.pid), timeout=10)
    assert workers, "the relay's workers never started"
    os.kill(relay.proc.pid, signal.SIGKILL)
    gone = wait_for(lambda: not any(_alive(p) for p in workers), timeout=10)
    assert gone, f"workers outlived their parent: {[p for p in workers if _alive(p)]}"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn(relay, agent), connect_timeout=3).close()


def _alive(pid: int) -> bool:
    return stat_fields(pid) is not None
