"""Hash-chained audit log: append, verify, export.

Each entry is one link: `hash = sha256(prev_hash + canonical_json(entry))` where the
entry is {seq, ts, actor, action, target, data}. Editing, removing or reordering any
entry breaks the chain from that point on. Removing entries from the *end* leaves a
shorter chain that is still valid; only an external anchor (an exported head hash)
catches that.

Session-close entries carry the digest of the recording, so a recording edited after
the fact fails `verify` as well.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, TextIO

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.models import AuditEntry, SessionEvent, utcnow
# Secrets are scrubbed before anything is chained; the scrubber is pure (app.redaction).
from app.redaction import REDACTED, scrub  # noqa: F401  (re-exported: audit.scrub)

GENESIS = "0" * 64
# Any constant will do, as long as nothing else in airlock takes the same advisory lock.
_CHAIN_LOCK_KEY = 0x41495244  # "AIRD"

def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _ts_text(ts: datetime) -> str:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _entry_hash(prev_hash: str, seq: int, ts: datetime, actor: str, action: str, target: str, data: Any) -> str:
    body = {"seq": seq, "ts": _ts_text(ts), "actor": actor, "action": action, "target": target, "data": data}
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


def take_chain_head(session: Session) -> None:
    """Hold the chain head until the caller's transaction ends, so appends take turns."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK_KEY})
    else:
        # pysqlite opens a write transaction only at the first write, and a plain read
        # would see a head that another process may extend before we insert. A no-op
        # write takes SQLite's single write lock now (waiting on busy_timeout), and from
        # then on our reads see every committed entry.
        session.execute(text("UPDATE audit_entries SET seq = seq WHERE 0"))


def append(session: Session, actor: str, action: str, target: str = "", data: dict | None = None) -> AuditEntry:
    """Add one entry in the caller's transaction; the chain head stays locked until commit."""
    # Round-trip through JSON so the hashed form is exactly what the store hands back.
    clean = json.loads(json.dumps(scrub(data or {}), default=str))
    take_chain_head(session)
    head = session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
    seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
    ts = utcnow()
    entry = AuditEntry(
        seq=seq, ts=ts, actor=actor, action=action, target=target, data=clean, prev_hash=prev,
        hash=_entry_hash(prev, seq, ts, actor, action, target, clean),
    )
    session.add(entry)
    session.flush()
    return entry


_json_string = json.encoder.py_encode_basestring if json.encoder.c_encode_basestring is None \
    else json.encoder.c_encode_basestring  # a str as canonical_json writes it (ensure_ascii=False)


def digest_line(seq: int, t: float, kind: str, data: str) -> bytes:
    """One event's share of its recording's digest: canonical_json([seq, t, kind, data])
    and a newline. Spelled out for the usual types, since the writer digests every
    event: the same text, a third of the cost."""
    if type(seq) is int and type(t) is float and type(kind) is str and type(data) is str:
        return f"[{seq},{t!r},{_json_string(kind)},{_json_string(data)}]\n".encode()
    return canonical_json([seq, t, kind, data]).encode() + b"\n"


def digest_events(events: Iterable[tuple[int, float, str, str]]) -> str:
    """Digest of a recording from its (seq, t, kind, data) events in seq order."""
    h = hashlib.sha256()
    for seq, t, kind, data in events:
        h.update(digest_line(seq, t, kind, data))
    return h.hexdigest()


def recording_digest(session: Session, session_id: str) -> str:
    rows = session.execute(
        select(SessionEvent.seq, SessionEvent.t, SessionEvent.kind, SessionEvent.data)
        .where(SessionEvent.session_id == session_id)
        .order_by(SessionEvent.seq)
    )
    # Plain tuples: a Row named column `t` would clash with Row.t (the tuple accessor).
    return digest_events(tuple(r) for r in rows)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str


def verify(session: Session) -> VerifyResult:
    """Walk the chain from genesis; stop at the first entry that does not hold up. Then
    check every recorded session against the chain (`_sessions_problem`)."""
    expected_seq, prev, checked = 1, GENESIS, 0
    opened: dict[str, int] = {}  # session id -> seq of its open entry
    closed: set[str] = set()
    # Recordings removed by retention are named in chain entries of their own (which the
    # walk below verifies like any other): their digests are not re-checked.
    purged = {str(sid) for data in session.scalars(select(AuditEntry.data).where(AuditEntry.action == "recording.purge"))
              for sid in (data or {}).get("session_ids", ())}
    rows = session.execute(select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=1000)).scalars()
    for e in rows:
        if e.seq != expected_seq:
            return VerifyResult(False, checked, expected_seq, f"entry {expected_seq} is missing (next is {e.seq})")
        if e.prev_hash != prev:
            return VerifyResult(False, checked, e.seq, f"entry {e.seq} does not link to entry {e.seq - 1}")
        if e.hash != _entry_hash(e.prev_hash, e.seq, e.ts, e.actor, e.action, e.target, e.data):
            return VerifyResult(False, checked, e.seq, f"entry {e.seq} was altered (hash mismatch)")
        if e.action == "session.close" and isinstance(e.data, dict) and "digest" in e.data:
            sid = e.data.get("session_id")
            if str(sid) not in purged and recording_digest(session, str(sid)) != e.data["digest"]:
                return VerifyResult(False, checked, e.seq, f"recording {sid} no longer matches its digest (entry {e.seq})")
            closed.add(str(sid))
        elif e.action == "session.open" and isinstance(e.data, dict) and "protocol" in e.data:
            opened[e.target] = e.seq  # a recorder's open entry: it names a recording
        checked += 1
        expected_seq, prev = e.seq + 1, e.hash
    for sid in purged:  # removed by retention, as a chain entry of its own says
        opened.pop(sid, None)
    problem = _sessions_problem(session, opened, closed)
    if problem is not None:
        seq, reason = problem
        return VerifyResult(False, checked, seq, reason)
    return VerifyResult(True, checked, None, f"{checked} entries verified")


def _sessions_problem(session: Session, opened: dict[str, int], closed: set[str]) -> tuple[int | None, str] | None:
    """Every session the chain opened still exists; every sealed one has its close entry
    (whose digest the walk checked); and none is left unsealed after its process died,
    since an unsealed recording could be edited without a trace."""
    from app.models import RecordedSession
    from app.recording_orphans import orphans

    rows = session.execute(select(RecordedSession.id, RecordedSession.digest)
                           .execution_options(yield_per=1000))
    sealed_late = []
    for sid, digest in rows:
        opened.pop(sid, None)
        if digest is not None and sid not in closed:
            sealed_late.append(sid)
    for sid in sealed_late:
        # Sessions keep closing while we walk (and a read may not be one snapshot): a
        # close entry committed after the walk is checked by the next verify.
        if session.scalar(select(AuditEntry.seq).where(AuditEntry.action == "session.close",
                                                       AuditEntry.target == sid).limit(1)) is None:
            return None, f"recording {sid} is sealed but its close entry is missing from the chain"
    if opened:
        sid, seq = min(opened.items(), key=lambda item: item[1])
        return seq, f"recording {sid} (opened at entry {seq}) has been removed"
    unsealed = orphans(session)
    if unsealed:
        more = f" and {len(unsealed) - 1} more" if len(unsealed) > 1 else ""
        return None, (f"recording {unsealed[0]}{more} was never sealed and its process is gone; "
                      "the scheduler's seal_orphans job seals it")
    return None


def entry_dict(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq, "ts": _ts_text(e.ts), "actor": e.actor, "action": e.action, "target": e.target,
        "data": e.data, "prev_hash": e.prev_hash, "hash": e.hash,
    }


def export(session: Session, out: TextIO, since_seq: int | None = None) -> int:
    """Write entries (seq > since_seq) as JSON lines for a SIEM; returns how many."""
    stmt = select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=1000)
    if since_seq is not None:
        stmt = stmt.where(AuditEntry.seq > since_seq)
    n = 0
    for e in session.execute(stmt).scalars():
        out.write(canonical_json(entry_dict(e)) + "\n")
        n += 1
    return n


def record_verification(session: Session, by: str, result: VerifyResult, seconds: float, via: str) -> None:
    """A verification is itself an audit entry: who checked the chain, when, and what it said."""
    append(session, by, "audit.verified", "audit", {
        "ok": result.ok, "checked": result.checked, "first_bad_seq": result.first_bad_seq,
        "reason": result.reason or "", "seconds": round(seconds, 3), "via": via})
