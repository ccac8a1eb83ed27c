"""Orphaned recordings: sealed by the writer child when its parent dies, by the lease
otherwise; `audit verify` covers every session."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from app import audit
from app.db import session_scope
from app.models import RecordedSession, RecordingOwner, utcnow
from app.recording import Recorder
from app.recording_seal import ABNORMAL, orphans, seal_orphans


def _verify() -> audit.VerifyResult:
    with session_scope() as s:
        return audit.verify(s)


def _row(sid: str) -> RecordedSession:
    with session_scope() as s:
        return s.get(RecordedSession, sid)


@pytest.mark.slow  # a writer child process
def test_the_writer_child_seals_its_open_sessions_when_its_parent_dies(store):
    from app.recording_writer import WriterProcess

    sink = WriterProcess()
    rec = Recorder(flush_seconds=0.05, sink=sink)
    session = rec.open(protocol="postgres", connection="db", service_account="etl")
    for i in range(3):
        session.event("output", {"sql": f"select {i}"})
    closed = rec.open(protocol="postgres", connection="db", service_account="etl")
    closed.close()
    rec.flush()
    child = sink._child
    # What a SIGKILLed parent leaves: the pipe ends without a goodbye.
    child.stdin.close()
    child.wait(30)
    row = _row(session.id)
    assert row.ended_at is not None and row.meta["ended"] == ABNORMAL
    assert row.event_count == 3
    with session_scope() as s:
        assert row.digest == audit.recording_digest(s, session.id)
    assert _row(closed.id).meta.get("ended") is None  # closed normally, left as it was
    assert _verify().ok
    sink._child = None
    rec.shutdown()


@pytest.mark.slow  # a writer child process
def test_a_clean_stop_says_goodbye_and_seals_nothing(store):
    from app.recording_writer import WriterProcess

    sink = WriterProcess()
    rec = Recorder(flush_seconds=0.05, sink=sink)
    session = rec.open(protocol="postgres", connection="db", service_account="etl")
    session.event("output", {"sql": "select 1"})
    rec.flush()
    sink.close()
    assert _row(session.id).ended_at is None  # a stop is not a death: the lease decides
    rec.shutdown()


def test_the_lease_seals_a_silent_owners_sessions_only(store):
    rec = Recorder(flush_seconds=0.05)
    live = rec.open(protocol="http", service_account="bot")
    live.event("input", {"url": "https://x.test/"})
    rec.flush()
    long_ago = utcnow() - timedelta(minutes=10)
    with session_scope() as s:
        s.add(RecordingOwner(id="gone:1:x", host="gone", pid=1, started_at=long_ago, heartbeat_at=long_ago))
        s.add(RecordedSession(id="orphan-1", protocol="http", started_at=long_ago, owner="gone:1:x", meta={}))
        audit.append(s, "bot", "session.open", "orphan-1", {"protocol": "http", "connection": "", "client": ""})
        # An old session of a live owner is not an orphan, however long it runs.
        s.execute(update(RecordedSession).where(RecordedSession.id == live.id).values(started_at=long_ago))
    with session_scope() as s:
        assert orphans(s) == ["orphan-1"]
    result = _verify()
    assert not result.ok and "orphan-1" in result.reason and "never sealed" in result.reason
    with session_scope() as s:
        s.add(RecordingOwner(id="ancient:2:y", host="ancient", pid=2, started_at=long_ago - timedelta(days=2),
                             heartbeat_at=long_ago - timedelta(days=2)))
    assert seal_orphans() == ["orphan-1"]
    assert _row("orphan-1").meta["ended"] == ABNORMAL and _row(live.id).ended_at is None
    with session_scope() as s:  # a day-old lease no open session names is forgotten
        assert s.get(RecordingOwner, "ancient:2:y") is None and s.get(RecordingOwner, rec.owner.owner) is not None
    assert _verify().ok
    live.close()
    rec.shutdown()


def test_a_recorder_heartbeats_its_lease(sqlite_store, monkeypatch):
    rec = Recorder(flush_seconds=0.05)
    rec._beat_every, rec._next_beat = 0.1, 0.0
    rec.flush()

    def beat():
        with session_scope() as s:
            return s.get(RecordingOwner, rec.owner.owner).heartbeat_at

    first = beat()
    deadline = time.monotonic() + 10  # every 0.1 s; polled, as the machine may be slow
    while beat() <= first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert beat() > first
    rec.shutdown()


def test_verify_reports_a_deleted_recording_and_a_missing_close_entry(store):
    rec = Recorder(flush_seconds=0.05)
    empty = rec.open(protocol="http", service_account="bot")
    empty.close()  # no events: its digest is that of nothing, so only its absence can show
    rec.shutdown()
    assert _verify().ok
    with session_scope() as s:
        s.execute(delete(RecordedSession).where(RecordedSession.id == empty.id))
    result = _verify()
    assert not result.ok and empty.id in result.reason and "removed" in result.reason
    with session_scope() as s:
        s.add(RecordedSession(id="forged", protocol="http", started_at=utcnow(), ended_at=utcnow(),
                              digest="0" * 64, meta={}))
    with session_scope() as s:
        assert s.scalar(select(RecordedSession.id).where(RecordedSession.id == "forged"))
    result = _verify()
    assert not result.ok
