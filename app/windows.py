"""Window approvals ("this shape, for this identity, for N minutes"): list and revoke.

A window is made by `app.approvals.vote` when every counted approval asked for one;
the gate matches it in `app.approvals.standing_use`. Revoking one ends it at once, and
the review's own approve-once use with it.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import audit, bus
from app.approvals import VoteError, WindowNotFound
from app.models import FingerprintApproval, Review, utcnow


def active_windows(session: Session, now: datetime | None = None) -> list[tuple[FingerprintApproval, Review]]:
    """Window approvals in force, soonest to end first, with the review that granted each."""
    now = now or utcnow()
    rows = session.execute(
        select(FingerprintApproval, Review).join(Review, Review.id == FingerprintApproval.review_id)
        .where(FingerprintApproval.expires_at > now, FingerprintApproval.revoked_at.is_(None))
        .order_by(FingerprintApproval.expires_at)
    ).all()
    return [(fpa, review) for fpa, review in rows]


def revoke_window(session: Session, window_id: int, *, by: str, now: datetime | None = None) -> FingerprintApproval:
    """End a window at once (an approver or admin; the caller checks the role). Raises
    WindowNotFound for an unknown window, VoteError for one that has already ended."""
    now = now or utcnow()
    fpa = session.get(FingerprintApproval, window_id)
    if fpa is None:
        raise WindowNotFound(f"window {window_id} does not exist")
    if fpa.revoked_at is not None or fpa.expires_at <= now:
        raise VoteError(f"window {window_id} has already ended")
    fpa.revoked_at, fpa.revoked_by = now, by
    # The review's own approve-once use ends with the window it came with.
    session.execute(update(Review).where(Review.id == fpa.review_id, Review.valid_until > now)
                    .values(valid_until=now).execution_options(synchronize_session=False))
    audit.append(session, by, "window.revoked", f"review:{fpa.review_id}", {
        "window_id": fpa.id, "review_id": fpa.review_id, "service_account": fpa.service_account,
        "connection": fpa.connection, "rule": fpa.rule, "was_until": fpa.expires_at.isoformat(),
    })
    bus.publish(session, "reviews", str(fpa.review_id))
    return fpa
