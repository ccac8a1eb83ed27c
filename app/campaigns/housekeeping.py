"""Housekeeping: grants and tokens that reached their expiry, and old recordings.

Expiry already stops a grant or token at the gate (each carries its time); these jobs
make it explicit: the row is marked, the policy version moves (so the relay ends the
sessions still open under an expired grant), and the audit log says so.

Recording retention deletes the events of sessions that ended longer ago than
AIRLOCK_RECORDING_RETENTION (e.g. 180d; unset or 0 keeps everything). The audit chain
is untouched: a `recording.purge` entry names the purged sessions, so `airlock audit
verify` still checks every link and knows those recordings are gone on purpose.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app import audit
from app.campaigns.decisions import take_grant
from app.models import Grant, RecordedSession, SessionEvent, SessionUsage, Token
from app.policy import parse_duration
from app.versions import bump_version

PURGE_BATCH = 500


def retention() -> timedelta | None:
    raw = os.environ.get("AIRLOCK_RECORDING_RETENTION", "").strip()
    if not raw or raw == "0":
        return None
    return timedelta(seconds=parse_duration(raw))


def expire_grants(s: Session, now: datetime) -> list[int]:
    due = s.scalars(select(Grant).where(Grant.revoked_at.is_(None), Grant.expires_at.is_not(None),
                                        Grant.expires_at <= now).order_by(Grant.id)).all()
    for g in due:
        take_grant(s, g.id, actor="airlock (expiry)", reason=f"expired at {g.expires_at.isoformat()}", now=now,
                   action="grant.expired")
    return [g.id for g in due]


def expire_tokens(s: Session, now: datetime) -> list[int]:
    due = s.scalars(select(Token).where(Token.revoked_at.is_(None), Token.expires_at <= now).order_by(Token.id)).all()
    for t in due:
        t.revoked_at = t.expires_at
        audit.append(s, "airlock (expiry)", "token.expired", t.service_account.name,
                     {"token_id": t.id, "prefix": t.prefix, "expired_at": t.expires_at.isoformat()})
    if due:
        bump_version(s)
    return [t.id for t in due]


def purge_recordings(s: Session, now: datetime, keep: timedelta | None = None) -> int:
    keep = keep if keep is not None else retention()
    if keep is None:
        return 0
    ids = list(s.scalars(select(RecordedSession.id).where(RecordedSession.ended_at.is_not(None),
                                                          RecordedSession.ended_at < now - keep)
                         .order_by(RecordedSession.ended_at).limit(PURGE_BATCH)))
    if not ids:
        return 0
    # The chain entry comes first, in the same transaction: the purge is on record or not done.
    audit.append(s, "airlock (retention)", "recording.purge", "sessions", {
        "session_ids": ids, "older_than": (now - keep).isoformat()})
    s.execute(delete(SessionUsage).where(SessionUsage.session_id.in_(ids)))
    s.execute(delete(SessionEvent).where(SessionEvent.session_id.in_(ids)))
    s.execute(delete(RecordedSession).where(RecordedSession.id.in_(ids)))
    return len(ids)
