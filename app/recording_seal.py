"""Orphaned recordings: sessions whose process died before it could close them.

Each process's recorder holds a lease: a `recording_owners` row that it heartbeats
(`HEARTBEATS_PER_LEASE` times a lease) and whose id it stamps on every session it
opens. A session still open whose owner has been silent for a whole lease belongs to
a process that is gone. It is sealed here as "ended abnormally", with the digest of
the events that reached the store, and from then on `airlock audit verify` checks it
like any other: editing or deleting its events fails verification.

Who seals:
- the recording writer child of a relay worker, at once, when its parent dies
  (app/recording_writer.py): it is the last process that writes those sessions, so
  nothing can land after the seal;
- every relay and proxy at start-up, and the scheduler's job `seal_orphans`, for what
  is left (a whole process group killed, a host lost): after one lease.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from app import audit
from app.config import settings
from app.db import session_scope
from app.models import RecordedSession, RecordingOwner, SessionEvent, utcnow
from app.recording_orphans import orphans

log = logging.getLogger(__name__)

HEARTBEATS_PER_LEASE = 6
ABNORMAL = "abnormally"
OWNER_GONE = "the process that recorded it stopped without closing it"
OWNER_KEEP = timedelta(days=1)


@dataclass
class Heartbeat:
    """A recorder's proof of life, written through its own writer like any event."""

    owner: str
    host: str
    pid: int


def new_owner() -> Heartbeat:
    host = socket.gethostname()[:150]
    pid = os.getpid()
    return Heartbeat(f"{host}:{pid}:{uuid.uuid4().hex[:12]}", host, pid)


def heartbeat_seconds() -> float:
    return settings().record_lease_seconds / HEARTBEATS_PER_LEASE


def apply_heartbeat(s, beat: Heartbeat) -> None:
    now = utcnow()
    row = s.get(RecordingOwner, beat.owner)
    if row is None:
        s.add(RecordingOwner(id=beat.owner, host=beat.host, pid=beat.pid, started_at=now, heartbeat_at=now))
    else:
        row.heartbeat_at = now


def seal(s, session_id: str, reason: str = OWNER_GONE) -> bool:
    """Seal one open session with the digest of its events in the store; False if it
    was closed meanwhile. Takes the audit chain head first, so that two sealers (or a
    sealer and a late close) take turns and only one close entry is written."""
    audit.take_chain_head(s)
    row = s.scalars(select(RecordedSession).where(RecordedSession.id == session_id,
                                                  RecordedSession.ended_at.is_(None)).with_for_update()).first()
    if row is None:
        return False
    s.flush()
    h, count = hashlib.sha256(), 0
    for seq, t, kind, data in s.execute(select(SessionEvent.seq, SessionEvent.t, SessionEvent.kind, SessionEvent.data)
                                        .where(SessionEvent.session_id == session_id).order_by(SessionEvent.seq)):
        h.update(audit.digest_line(seq, t, kind, data))
        count += 1
    digest = h.hexdigest()
    row.ended_at = utcnow()
    row.event_count = count
    row.digest = digest
    row.meta = {**(row.meta or {}), "ended": ABNORMAL, "end_reason": reason}
    audit.append(s, actor=row.service_account or "anonymous", action="session.close", target=row.id,
                 data={"session_id": row.id, "digest": digest, "events": count, "ended": ABNORMAL, "reason": reason})
    return True


def seal_sessions(session_ids, reason: str = OWNER_GONE) -> list[str]:
    """Seal each session in a transaction of its own (the chain head is held briefly)."""
    sealed = []
    for session_id in session_ids:
        with session_scope() as s:
            if seal(s, session_id, reason):
                sealed.append(session_id)
    if sealed:
        log.warning("sealed %d orphaned recording(s) as ended abnormally: %s", len(sealed), ", ".join(sealed[:20]))
    return sealed


def seal_orphans() -> list[str]:
    """Seal every orphaned session: the scheduler's job, and what relays and proxies run
    at start-up. Returns the ids sealed."""
    with session_scope() as s:
        ids = orphans(s)
    sealed = seal_sessions(ids)
    with session_scope() as s:
        prune_owners(s)
    return sealed


def prune_owners(s, now: datetime | None = None) -> int:
    """Forget leases silent for a day that no open session names (one row per process
    start would pile up otherwise)."""
    still_named = select(RecordedSession.owner).where(RecordedSession.ended_at.is_(None),
                                                      RecordedSession.owner.is_not(None))
    return s.execute(delete(RecordingOwner).where(RecordingOwner.heartbeat_at < (now or utcnow()) - OWNER_KEEP,
                                                  RecordingOwner.id.not_in(still_named))).rowcount or 0


def seal_dead_process(pid: int, host: str | None = None) -> list[str]:
    """Seal at once the open sessions of a process known to be dead (a proxy worker its
    parent saw die: its recorder wrote from a thread of its own, so nothing more of
    those sessions can arrive)."""
    prefix = f"{host or socket.gethostname()[:150]}:{pid}:"
    with session_scope() as s:
        ids = list(s.scalars(select(RecordedSession.id).where(RecordedSession.ended_at.is_(None),
                                                               RecordedSession.owner.startswith(prefix, autoescape=True))))
    return seal_sessions(ids, "the process that recorded it ended without closing it")


def seal_orphans_quietly() -> None:
    """seal_orphans for a process starting up: a store that is down now is not its problem."""
    try:
        seal_orphans()
    except Exception as exc:  # noqa: BLE001 - the scheduler and the next start try again
        log.warning("could not seal orphaned recordings now: %s", exc)
