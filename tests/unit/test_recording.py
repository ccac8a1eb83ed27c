import json
import time

from sqlalchemy import select, update

from app import audit
from app.db import session_scope
from app.models import AuditEntry, RecordedSession, SessionEvent
from app.recording import Recorder, asciicast


def _recorder():
    return Recorder(flush_seconds=0.05)


def test_events_are_written_in_batches_within_a_second(store):
    rec = _recorder()
    try:
        session = rec.open(protocol="postgres", connection="orders-db", service_account="etl", client_addr="127.0.0.1:5")
        session.event("input", {"sql": "select 1"})
        session.event("output", {"rows": 1})
        time.sleep(1.0)  # no explicit flush: the writer thread must have done it
        with session_scope() as s:
            row = s.get(RecordedSession, session.id)
            assert row is not None and row.connection == "orders-db"
            kinds = [e.kind for e in s.scalars(select(SessionEvent).where(SessionEvent.session_id == session.id).order_by(SessionEvent.seq))]
        assert kinds == ["input", "output"]
    finally:
        rec.shutdown()


def test_close_seals_the_recording_into_the_audit_chain(store):
    rec = _recorder()
    session = rec.open(protocol="ssh", connection="web-1", service_account="deploy-bot")
    session.tag_run("run-42")
    for i in range(5):
        session.event("output", {"text": f"line {i}\r\n"})
    session.close(exit_status=0)
    rec.shutdown()
    with session_scope() as s:
        row = s.get(RecordedSession, session.id)
        assert row.run_id == "run-42"
        assert row.event_count == 5 and row.ended_at is not None
        assert row.digest == audit.recording_digest(s, session.id)
        actions = [e.action for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
        assert actions == ["session.open", "session.close"]
        assert audit.verify(s).ok
    # Editing the recording afterwards breaks verification.
    with session_scope() as s:
        s.execute(update(SessionEvent).where(SessionEvent.session_id == session.id, SessionEvent.seq == 3)
                  .values(data=json.dumps({"text": "nothing to see\r\n"})))
    with session_scope() as s:
        result = audit.verify(s)
        assert not result.ok
        assert result.first_bad_seq == 2


def test_events_after_close_are_ignored(sqlite_store):
    rec = _recorder()
    session = rec.open(protocol="http")
    session.event("input", {"a": 1})
    session.close()
    session.event("input", {"a": 2})
    rec.shutdown()
    with session_scope() as s:
        assert s.get(RecordedSession, session.id).event_count == 1
        assert len(list(s.scalars(select(SessionEvent)))) == 1


def test_a_failed_flush_keeps_the_events_for_the_next_try(sqlite_store, monkeypatch):
    import app.recording as recording

    rec = _recorder()
    real = recording._apply
    calls = {"n": 0}

    def flaky(s, item):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("store blip")
        return real(s, item)

    monkeypatch.setattr(recording, "_apply", flaky)
    session = rec.open(protocol="http", connection="api")
    session.event("input", {"x": 1})
    time.sleep(1.0)
    rec.shutdown()
    with session_scope() as s:
        assert s.get(RecordedSession, session.id) is not None
        assert len(list(s.scalars(select(SessionEvent)))) == 1


def test_unknown_event_kind_is_refused(sqlite_store):
    rec = _recorder()
    try:
        session = rec.open(protocol="http")
        try:
            session.event("bogus", {})
        except ValueError as exc:
            assert "bogus" in str(exc)
        else:
            raise AssertionError("bogus kind accepted")
    finally:
        rec.shutdown()


def test_asciicast_v2_export(sqlite_store):
    rec = _recorder()
    session = rec.open(protocol="ssh", connection="web-1", service_account="bot", meta={"width": 100, "height": 30})
    session.event("output", {"text": "$ "})
    session.event("input", {"text": "ls\r"})
    session.event("resize", {"width": 120, "height": 40})
    session.event("decision", {"action": "allow"})
    session.event("output", {"text": "a  b\r\n"})
    session.close()
    rec.shutdown()
    with session_scope() as s:
        text = asciicast(s, session.id)
    lines = text.strip().split("\n")
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 100 and header["height"] == 30
    frames = [json.loads(l) for l in lines[1:]]
    assert [f[1] for f in frames] == ["o", "i", "r", "o"]
    assert frames[2][2] == "120x40"
    assert frames[3][2] == "a  b\r\n"
    assert all(frames[i][0] <= frames[i + 1][0] for i in range(len(frames) - 1))
