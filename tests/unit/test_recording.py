import json
import time

import pytest
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
    import app.recording_store as recording

    rec = _recorder()
    real = recording._apply
    calls = {"n": 0}

    def flaky(s, item, *args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("store blip")
        return real(s, item, *args)

    monkeypatch.setattr(recording, "_apply", flaky)
    session = rec.open(protocol="http", connection="api")
    session.event("input", {"x": 1})
    # The writer thread's own retry (the second call), not the flush at shutdown.
    deadline = time.monotonic() + 10
    while calls["n"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert calls["n"] >= 2, "the writer never tried again after the failed flush"
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


# --- the running digest and the writer process ------------------------------------------

def _sealed_digest_matches_the_store(session_id: str) -> None:
    with session_scope() as s:
        row = s.get(RecordedSession, session_id)
        assert row.digest is not None and row.digest == audit.recording_digest(s, session_id)
        assert audit.verify(s).ok


def test_a_recording_written_over_many_batches_is_sealed_with_its_running_digest(store, monkeypatch):
    import app.audit as audit_module

    rec = _recorder()
    session = rec.open(protocol="postgres", connection="db", service_account="etl")
    for i in range(30):
        session.event("output", {"sql": f"select {i}", "ms": i / 7})
        if i % 10 == 9:
            rec.flush()
    read_back = []
    monkeypatch.setattr(audit_module, "recording_digest", lambda s, sid: read_back.append(sid) or "from the store")
    session.close()
    rec.shutdown()
    assert read_back == []  # sealed without reading the events back
    monkeypatch.undo()
    _sealed_digest_matches_the_store(session.id)


def test_a_recording_the_writer_did_not_see_whole_is_digested_from_the_store(sqlite_store):
    first = _recorder()
    session = first.open(protocol="postgres", connection="db")
    session.event("output", {"sql": "select 1"})
    first.flush()
    second = Recorder(flush_seconds=0.05)  # a new writer (a restarted process) sees only the rest
    session._recorder, session._append = second, second._queue.append
    session.event("output", {"sql": "select 2"})
    session.close()
    second.shutdown()
    first.shutdown()
    _sealed_digest_matches_the_store(session.id)


@pytest.mark.slow  # a writer child process
def test_the_writer_process_writes_flushes_and_survives_being_killed(store):
    from app.recording_writer import WriterProcess

    sink = WriterProcess()
    rec = Recorder(flush_seconds=0.05, sink=sink)
    try:
        session = rec.open(protocol="postgres", connection="db", service_account="etl")
        session.event("output", {"sql": "select 1"})
        rec.flush()  # synchronous: written once it returns
        with session_scope() as s:
            assert [e.kind for e in s.scalars(select(SessionEvent).where(SessionEvent.session_id == session.id))] == ["output"]
        sink._child.kill()
        sink._child.wait()
        session.event("output", {"sql": "select 2"})
        session.event("output", {"sql": "select 3"})
        session.close()
        rec.flush()  # the dead child's batch comes back; the next flush starts a new child
        rec.flush()
    finally:
        rec.shutdown()
    assert sink._child is None  # shutdown ended the child
    with session_scope() as s:
        data = [json.loads(e.data)["sql"] for e in s.scalars(
            select(SessionEvent).where(SessionEvent.session_id == session.id).order_by(SessionEvent.seq))]
        assert data == ["select 1", "select 2", "select 3"]
        assert s.get(RecordedSession, session.id).event_count == 3
    _sealed_digest_matches_the_store(session.id)


@pytest.mark.slow  # a writer child process
def test_the_writer_process_hands_back_what_the_store_refused(sqlite_store, tmp_path, monkeypatch):
    from app.recording_writer import WriterProcess

    monkeypatch.setenv("AIRLOCK_DATABASE_URL", f"sqlite:///{tmp_path}/missing/dir/x.db?mode=ro")
    sink = WriterProcess()
    try:
        batch = [("no-such-session", 1, 0.1, "output", "{}")]
        assert sink.write(batch) == batch and sink.failures == 1
    finally:
        sink.close()


def _render_statement(sql: str, rows: int) -> dict:
    return {"sql": sql, "rows": rows}


def _render_nothing_good(sql: str) -> dict:
    raise ValueError(sql)


@pytest.mark.slow  # a writer child process
def test_events_built_later_by_the_writer_are_stored_as_json_and_sealed(store):
    from app.recording_writer import WriterProcess

    rec = Recorder(flush_seconds=0.05, sink=WriterProcess())  # rendered in the child process
    session = rec.open(protocol="postgres", connection="db")
    session.event_later("output", _render_statement, "select 1", 1)
    session.event("output", {"sql": "select 2"})
    session.event_later("output", _render_nothing_good, "select 3")
    session.close()
    rec.shutdown()
    with session_scope() as s:
        data = [json.loads(e.data) for e in s.scalars(
            select(SessionEvent).where(SessionEvent.session_id == session.id).order_by(SessionEvent.seq))]
    assert data == [{"sql": "select 1", "rows": 1}, {"sql": "select 2"}, {"render_error": "ValueError"}]
    _sealed_digest_matches_the_store(session.id)
