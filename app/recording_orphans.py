"""Which open recordings have lost their process: the one query that both the sealer
(app/recording_seal.py) and `airlock audit verify` (app/audit.py) ask. It sits below
both, so that neither imports the other's caller."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select

from app.config import settings
from app.models import RecordedSession, RecordingOwner, utcnow


def orphans(s, now: datetime | None = None, lease: float | None = None) -> list[str]:
    """Ids of open sessions whose owner has been silent for a whole lease (or is unknown)."""
    stale = (now or utcnow()) - timedelta(seconds=lease or settings().record_lease_seconds)
    q = (select(RecordedSession.id)
         .outerjoin(RecordingOwner, RecordingOwner.id == RecordedSession.owner)
         .where(RecordedSession.ended_at.is_(None), RecordedSession.started_at < stale,
                or_(RecordingOwner.id.is_(None), RecordingOwner.heartbeat_at < stale))
         .order_by(RecordedSession.started_at))
    return list(s.scalars(q))
