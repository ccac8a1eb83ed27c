"""Votes: count one, close the review when the quorum is met or anyone rejects, expire.

Who may vote is `eligibility.vote_refusal`, the same rule the portal, Slack and the
API show before anyone clicks.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app import audit, bus
from app.db import session_scope
from app.models import FingerprintApproval, Review, User, Vote, user_by_email, utcnow
from app.types import ReviewSpec

from .eligibility import vote_refusal, window_refusal
from .errors import ReviewNotFound, VoteError


def _lock_review(session: Session, review_id: int) -> Review | None:
    """Load the review for update, so concurrent votes and expiry take turns on it."""
    if session.get_bind().dialect.name == "sqlite":
        # A write takes SQLite's single write lock now; reads after it see the truth.
        session.execute(text("UPDATE reviews SET id = id WHERE id = :id"), {"id": review_id})
        stmt = select(Review).where(Review.id == review_id)
    else:
        stmt = select(Review).where(Review.id == review_id).with_for_update()
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def voter(session: Session, email: str) -> User | None:
    """The airlock user who votes as `email` (case-insensitive), or None."""
    return user_by_email(session, email)


def record_refused_vote(voter_email: str, review_id: int, decision: str, message: str, via: str) -> None:
    """Audit a vote airlock refused, in its own transaction (the vote's was rolled back)."""
    with session_scope() as s:
        audit.append(s, (voter_email or "?").strip().lower(), "review.vote_refused", f"review:{review_id}", {
            "review_id": review_id, "decision": decision, "reason": message, "via": via})


def vote(
    session: Session,
    review_id: int,
    *,
    voter_email: str,
    decision: str,
    reason: str = "",
    window_minutes: int | None = None,
    via: str = "portal",
    now: datetime | None = None,
) -> Review:
    now = now or utcnow()
    email = (voter_email or "").strip().lower()
    if decision not in ("approve", "reject"):
        raise VoteError(f"unknown decision {decision!r}")
    review = _lock_review(session, review_id)
    if review is None:
        raise ReviewNotFound(f"review {review_id} does not exist")
    prior = next((v for v in review.votes if v.approver.lower() == email), None)
    if prior is not None and prior.decision == decision and prior.window_minutes == window_minutes:
        # A double click, or the same vote from Slack and the portal: count it once.
        return review
    refusal = (vote_refusal(review, voter(session, email), email, via=via, now=now)
               or window_refusal(review, decision, window_minutes))
    if refusal:
        raise VoteError(refusal)

    review.votes.append(Vote(approver=email, decision=decision, window_minutes=window_minutes,
                             reason=reason or "", via=via, created_at=now))
    session.flush()
    target = f"review:{review.id}"
    audit.append(session, email, "review.vote", target, {
        "review_id": review.id, "decision": decision, "reason": reason or "", "window_minutes": window_minutes,
        "via": via,
    })
    if decision == "reject":
        review.status, review.decided_at, review.decided_by, review.reason = "rejected", now, email, reason or ""
        audit.append(session, email, "review.rejected", target, {"review_id": review.id, "reason": reason or ""})
    else:
        approvals = [v for v in review.votes if v.decision == "approve"]
        if len({v.approver for v in approvals}) >= review.required:
            _approve(session, review, approvals, email, reason, now)
    bus.publish(session, target, review.status)
    return review


def _approve(session: Session, review: Review, approvals: list[Vote], email: str, reason: str, now: datetime) -> None:
    expires_after = float(review.details.get("expires_after_seconds", ReviewSpec().expires_after_seconds))
    windows = [v.window_minutes for v in approvals]
    # Each approver consents only to what they chose: the window exists only if every
    # counted approval asked for one, and then it is the shortest.
    window = min(windows) if all(w is not None for w in windows) else None
    review.status, review.decided_at, review.decided_by = "approved", now, email
    review.reason = reason or ""
    review.valid_until = now + timedelta(seconds=expires_after)
    review.details = {**review.details, "expires_after_seconds": expires_after,
                      "approvers": sorted(v.approver for v in approvals), "window_minutes": window}
    if window is not None:
        # The window already covers this use; it must not leave a spare approve-once use
        # behind that outlives it.
        review.valid_until = min(review.valid_until, now + timedelta(minutes=window))
        session.add(FingerprintApproval(
            service_account=review.service_account, connection=review.connection, fingerprint=review.fingerprint,
            rule=review.rule, review_id=review.id, expires_at=now + timedelta(minutes=window), created_at=now,
        ))
    audit.append(session, email, "review.approved", f"review:{review.id}", {
        "review_id": review.id, "approvers": sorted(v.approver for v in approvals),
        "valid_until": review.valid_until.isoformat(), "window_minutes": window,
    })


def expire_reviews(session: Session, now: datetime | None = None) -> list[int]:
    """Close pending reviews whose time is up; returns their ids."""
    now = now or utcnow()
    due = session.scalars(
        select(Review.id).where(Review.status == "pending", Review.expires_at <= now).order_by(Review.id)
    ).all()
    expired = []
    for rid in due:
        # Conditional, so a vote that lands first wins and we skip the review.
        res = session.execute(
            update(Review).where(Review.id == rid, Review.status == "pending")
            .values(status="expired", decided_at=now, decided_by="system")
        )
        if res.rowcount == 1:
            audit.append(session, "system", "review.expired", f"review:{rid}", {"review_id": rid})
            bus.publish(session, f"review:{rid}", "expired")
            expired.append(rid)
    return expired
