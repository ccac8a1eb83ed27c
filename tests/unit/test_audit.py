"""The hash-chained audit log on SQLite and PostgreSQL: chain, tampering, concurrency, scrubbing."""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import threading
import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from sqlalchemy import delete, select, update

from app import audit, db
from app.config import settings
from app.db import session_scope
from app.models import AuditEntry, RecordedSession, SessionEvent


def _append_n(n: int, actor: str = "alice@example.com") -> None:
    for i in range(n):
        with session_scope() as s:
            audit.append(s, actor, "policy.apply", f"target-{i}", {"i": i, "note": f"change {i}"})


def _verify() -> audit.VerifyResult:
    with session_scope() as s:
        return audit.verify(s)


def _rows() -> list[AuditEntry]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.seq)))


def _independent_hash(prev: str, e: AuditEntry) -> str:
    body = {
        "seq": e.seq,
        "ts": e.ts.astimezone(timezone.utc).isoformat(timespec="microseconds"),
        "actor": e.actor, "action": e.action, "target": e.target, "data": e.data,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + text).encode()).hexdigest()


def test_append_builds_a_chain_that_verifies(store):
    _append_n(5)
    rows = _rows()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    prev = "0" * 64
    for r in rows:
        assert r.prev_hash == prev
        assert r.hash == _independent_hash(prev, r)
        prev = r.hash
    assert _verify() == audit.VerifyResult(True, 5, None, "5 entries verified")


def test_append_stores_data_as_json_round_trips_it(store):
    # Values JSON cannot hold natively are stored in the form that is hashed.
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with session_scope() as s:
        entry = audit.append(s, "cli", "token.issue", "etl", {"expires": when, "groups": ("a", "b"), "n": 1.5})
    assert entry.data == {"expires": "2030-01-02 03:04:05+00:00", "groups": ["a", "b"], "n": 1.5}
    assert _verify().ok


def test_edited_data_is_detected_at_that_entry(store):
    _append_n(5)
    with session_scope() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(data={"i": 99, "note": "change 2"}))
    result = _verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 3, 2)
    assert "altered" in result.reason


def test_edited_actor_is_detected(store):
    _append_n(4)
    with session_scope() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="mallory@example.com"))
    result = _verify()
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_edit_with_a_recomputed_hash_breaks_the_next_link(store):
    _append_n(4)
    rows = _rows()
    forged = rows[1]
    forged.actor = "mallory@example.com"
    new_hash = _independent_hash(forged.prev_hash, forged)
    with session_scope() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor=forged.actor, hash=new_hash))
    result = _verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "link" in result.reason


def test_removed_middle_entry_is_detected_as_a_gap(store):
    _append_n(5)
    with session_scope() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.seq == 3))
    result = _verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 3, 2)
    assert "missing" in result.reason


def test_reordered_entries_are_detected(store):
    _append_n(5)
    rows = {r.seq: r for r in _rows()}
    fields = ("ts", "actor", "action", "target", "data", "prev_hash", "hash")
    # Swap the whole contents of entries 2 and 3, keeping their positions.
    with session_scope() as s:
        for seq, other in ((2, 3), (3, 2)):
            s.execute(update(AuditEntry).where(AuditEntry.seq == seq)
                      .values({f: getattr(rows[other], f) for f in fields}))
    result = _verify()
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_renumbered_entries_are_detected(store):
    _append_n(5)
    with session_scope() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 4).values(seq=-1))
        s.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(seq=4))
        s.execute(update(AuditEntry).where(AuditEntry.seq == -1).values(seq=3))
    result = _verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)


def test_truncated_tail_alone_is_not_detectable(store):
    # A known limit of any hash chain: dropping the newest entries leaves a shorter chain
    # that is internally valid. Only an anchor kept elsewhere (an exported head hash, the
    # SIEM copy) reveals it. This test pins the limit so nobody believes otherwise.
    _append_n(5)
    with session_scope() as s:
        s.execute(delete(AuditEntry).where(AuditEntry.seq >= 4))
    assert _verify() == audit.VerifyResult(True, 3, None, "3 entries verified")


def _record_session(events: list[tuple[float, str, str]]) -> str:
    sid = str(uuid.uuid4())
    with session_scope() as s:
        s.add(RecordedSession(id=sid, protocol="ssh", connection="web-1", service_account="deploy-bot"))
        s.flush()
        for seq, (t, kind, data) in enumerate(events, start=1):
            s.add(SessionEvent(session_id=sid, seq=seq, t=t, kind=kind, data=data))
        s.flush()
        digest = audit.recording_digest(s, sid)
        audit.append(s, "deploy-bot", "session.close", sid, {"session_id": sid, "digest": digest, "events": 3})
    return sid


def test_recording_digest_is_sha256_of_canonical_events(store):
    events = [(0.0, "input", '"ls\\r"'), (0.25, "output", '"a  b\\r\\n"'), (1.5, "notice", '{"x": 1}')]
    sid = _record_session(events)
    expected = hashlib.sha256()
    for seq, (t, kind, data) in enumerate(events, start=1):
        expected.update((json.dumps([seq, t, kind, data], sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False) + "\n").encode())
    with session_scope() as s:
        assert audit.recording_digest(s, sid) == expected.hexdigest()


def test_edited_recording_fails_verification_at_its_close_entry(store):
    _append_n(2)
    sid = _record_session([(0.0, "input", '"whoami\\r"'), (0.1, "output", '"root\\r\\n"'), (0.2, "input", '"exit"')])
    _append_n(2)
    assert _verify().ok
    with session_scope() as s:
        s.execute(update(SessionEvent).where(SessionEvent.session_id == sid, SessionEvent.seq == 2)
                  .values(data='"deploy\\r\\n"'))
    result = _verify()
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert sid in result.reason


def test_removed_recording_event_fails_verification(store):
    sid = _record_session([(0.0, "input", '"a"'), (0.1, "output", '"b"'), (0.2, "input", '"c"')])
    with session_scope() as s:
        s.execute(delete(SessionEvent).where(SessionEvent.session_id == sid, SessionEvent.seq == 3))
    assert (_verify().ok, _verify().first_bad_seq) == (False, 1)


def test_concurrent_appends_from_threads_keep_one_chain(store):
    threads, per_thread = 8, 15
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with session_scope() as s:
                    audit.append(s, f"worker-{k}", "test.append", str(i), {"k": k, "i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    assert [r.seq for r in _rows()] == list(range(1, threads * per_thread + 1))
    assert _verify() == audit.VerifyResult(True, threads * per_thread, None, f"{threads * per_thread} entries verified")


def _process_worker(k: int, n: int, start) -> None:
    settings.cache_clear()
    db.reset_engines()
    start.wait()
    for i in range(n):
        with session_scope() as s:
            audit.append(s, f"process-{k}", "test.append", str(i), {"k": k, "i": i})


@pytest.mark.slow  # two spawned processes
def test_concurrent_appends_from_processes_keep_one_chain(store):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_process_worker, args=(k, 40, start)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    rows = _rows()
    assert [r.seq for r in rows] == list(range(1, 81))
    assert {r.actor for r in rows} == {"process-0", "process-1"}
    assert _verify().ok and _verify().checked == 80


def test_export_writes_every_field_as_json_lines(store):
    _append_n(3)
    out = io.StringIO()
    with session_scope() as s:
        assert audit.export(s, out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    rows = _rows()
    assert [line["seq"] for line in lines] == [1, 2, 3]
    assert set(lines[0]) == {"seq", "ts", "actor", "action", "target", "data", "prev_hash", "hash"}
    assert [line["hash"] for line in lines] == [r.hash for r in rows]
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    # An outside party can re-check the chain from the export alone.
    prev = "0" * 64
    for line in lines:
        body = {k: line[k] for k in ("seq", "ts", "actor", "action", "target", "data")}
        assert hashlib.sha256((prev + audit.canonical_json(body)).encode()).hexdigest() == line["hash"]
        prev = line["hash"]
    since = io.StringIO()
    with session_scope() as s:
        assert audit.export(s, since, since_seq=2) == 1
    assert json.loads(since.getvalue())["seq"] == 3


def test_append_never_stores_secrets(store):
    with session_scope() as s:
        audit.append(s, "cli", "connection.update", "orders-db", {
            "config": {"host": "db1", "Password": "hunter2-pass"},
            "headers": [{"Authorization": "Bearer abc.def.ghi123"}, {"Set-Cookie": "sid=s3cr3tcookie"}],
            "token_id": 7,
        })
    out = io.StringIO()
    with session_scope() as s:
        audit.export(s, out)
    text = out.getvalue()
    for secret in ("hunter2-pass", "abc.def.ghi123", "s3cr3tcookie"):
        assert secret not in text
    data = json.loads(text)["data"]
    assert data["config"] == {"host": "db1", "Password": "[redacted]"}
    assert data["token_id"] == 7
    assert _verify().ok


def test_scrub_redacts_secret_keys_at_any_depth_case_insensitively():
    data = {
        "user": "alice",
        "PASSWORD": "p1",
        "nested": {"client_secret": "p2", "list": [{"Private-Key": "p3"}, {"X-Api-Key": "p4"}], "ok": 1},
        "Cookie": "p5",
        "access_token": "p6",
        "token_prefix": "alk_ab12",
        "expires_at": "2030-01-01",
        "empty_password": "",
    }
    clean = audit.scrub(data)
    assert clean["user"] == "alice" and clean["nested"]["ok"] == 1
    assert clean["PASSWORD"] == clean["Cookie"] == clean["access_token"] == "[redacted]"
    assert clean["nested"]["client_secret"] == "[redacted]"
    assert clean["nested"]["list"] == [{"Private-Key": "[redacted]"}, {"X-Api-Key": "[redacted]"}]
    assert clean["token_prefix"] == "alk_ab12"
    assert clean["empty_password"] == ""
    assert data["PASSWORD"] == "p1"  # the caller's dict is left alone


def test_scrub_redacts_secrets_inside_text():
    text = (
        "ALTER ROLE app PASSWORD 'it''s-secret'; curl -H 'Authorization: Bearer eyJhbGciOi.payload.sig' "
        "https://bot:alk_Zm9vYmFyYmF6cXV4cXV1eA@proxy:8080 alk_Zm9vYmFyYmF6cXV4cXV1eA "
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----"
    )
    clean = audit.scrub(text)
    for secret in ("it''s-secret", "eyJhbGciOi", "Zm9vYmFyYmF6cXV4cXV1eA", "b3BlbnNzaC1rZXk"):
        assert secret not in clean
    assert "ALTER ROLE app PASSWORD '[redacted]'" in clean
    assert "https://bot:[redacted]@proxy:8080" in clean


_SECRET_KEYS = st.sampled_from(["password", "Token", "API_KEY", "client-secret", "Authorization", "cookie",
                                "ssh_private_key", "db_passwd"])
_PLAIN = st.text(alphabet="0123456789 ", max_size=8)


@st.composite
def _nested_with_secret(draw):
    secret = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=8, max_size=20))
    node: object = {draw(_SECRET_KEYS): secret}
    for _ in range(draw(st.integers(0, 4))):
        siblings = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), _PLAIN, max_size=2))
        if draw(st.booleans()):
            node = {**siblings, "child": node}
        else:
            node = [draw(_PLAIN), node]
    return secret, node


@hsettings(max_examples=200, deadline=None)
@given(_nested_with_secret())
def test_scrub_never_lets_a_keyed_secret_through(case):
    secret, data = case
    assert secret in audit.canonical_json(data)
    assert secret not in audit.canonical_json(audit.scrub(data))


def test_scrub_leaves_prose_alone():
    reason = "basic sanity checks passed; bearer of the ticket is alice"
    assert audit.scrub({"reason": reason}) == {"reason": reason}
