"""Using an approval: a window matches a shape, an approve-once review the exact operation."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import audit
from app.models import FingerprintApproval, Review, utcnow


def standing_approval(session: Session, **kw) -> str | None:
    """Why this operation may pass without a new review, or None (see `standing_use`)."""
    return standing_use(session, **kw)[0]


def standing_use(
    session: Session, *, service_account: str, connection: str, fingerprint: str, binding: str, rule: str,
    ran: dict | None = None, now: datetime | None = None,
) -> tuple[str | None, int | None]:
    """(why this operation may pass without a new review, the approve-once review it used
    up), or (None, None).

    A window matches the operation's shape (`fingerprint`) and is reusable until it ends
    or is revoked; an approve-once review matches the exact operation (`binding`) and is
    used up here, atomically, so two processes racing for it cannot both pass. `ran` is
    what the audit records as the operation that used it.
    """
    now, rule = now or utcnow(), rule or ""
    if fingerprint:
        fpa = session.scalars(
            select(FingerprintApproval).where(
                FingerprintApproval.service_account == service_account, FingerprintApproval.connection == connection,
                FingerprintApproval.fingerprint == fingerprint, FingerprintApproval.rule == rule,
                FingerprintApproval.expires_at > now, FingerprintApproval.revoked_at.is_(None),
            ).order_by(FingerprintApproval.expires_at.desc()).limit(1)
        ).first()
        if fpa is not None:
            return f"shape approved in review {fpa.review_id} until {fpa.expires_at:%Y-%m-%d %H:%M:%S} UTC", None
    if not binding:
        return None, None
    match = (
        Review.service_account == service_account, Review.connection == connection,
        Review.binding == binding, Review.rule == rule, Review.status == "approved",
        Review.consumed_at.is_(None), Review.valid_until > now,
    )
    for rid in session.scalars(select(Review.id).where(*match).order_by(Review.id)).all():
        res = session.execute(
            update(Review).where(Review.id == rid, *match).values(consumed_at=now)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:
            audit.append(session, service_account, "review.used", f"review:{rid}", {
                "review_id": rid, "connection": connection, "binding": binding, **(ran or {}),
            })
            return f"approved once in review {rid}", rid
    return None, None


def release_use(session: Session, review_id: int, reason: str, now: datetime | None = None) -> None:
    """Give an approve-once use back: its requester left before the operation was sent."""
    res = session.execute(
        update(Review).where(Review.id == review_id, Review.consumed_at.is_not(None))
        .values(consumed_at=None, requester_gone_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    if res.rowcount == 1:
        audit.append(session, "system", "review.use_returned", f"review:{review_id}",
                     {"review_id": review_id, "reason": reason})
