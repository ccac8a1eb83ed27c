"""The review queue as one viewer sees it: what needs their vote, live holds first.

Eligibility is `approvals.vote_refusal`, the rule `vote` itself enforces, so the badge,
the buttons and the vote never disagree.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app import approvals
from app.models import Review, User, Vote, utcnow
from app.portal.present import review_view

RECENT = 25
PENDING_LIMIT = 200


def viewer(s: Session, email: str) -> User | None:
    return approvals.voter(s, email)


def refusal(review: Review, user: User | None, email: str, now: datetime | None = None) -> str | None:
    """Why this viewer cannot vote on the review in the portal now, or None when their
    vote is wanted: exactly what `approvals.vote` would answer."""
    return approvals.vote_refusal(review, user, email, via="portal", now=now)


def _pending(s: Session, now: datetime) -> list[Review]:
    return list(s.scalars(
        select(Review).options(selectinload(Review.votes))
        .where(Review.status == "pending", Review.expires_at > now)
        .order_by(Review.expires_at.asc()).limit(PENDING_LIMIT)
    ).all())


def _order(view: dict[str, Any]) -> tuple:
    # A held agent is racing its hold; a review nobody waits on only races its expiry.
    return (0, view["hold_until"]) if view["agent_waiting"] else (1, view["expires_at"])


def pending(s: Session, email: str, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or utcnow()
    user = viewer(s, email)
    out = []
    for row in _pending(s, now):
        view = review_view(row, now)
        view["refusal"] = refusal(row, user, email, now)
        view["needs_me"] = view["refusal"] is None
        out.append(view)
    out.sort(key=_order)
    return out


def recent(s: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    decided = func.coalesce(Review.decided_at, Review.expires_at)
    rows = s.scalars(
        select(Review).options(selectinload(Review.votes)).where(Review.status != "pending")
        .order_by(decided.desc(), Review.id.desc()).limit(RECENT)
    ).all()
    return [review_view(r, now) for r in rows]


def counts(s: Session, email: str) -> tuple[int, int]:
    """(reviews this viewer may vote on and has not, all pending reviews)."""
    rows = _pending(s, utcnow())
    user = viewer(s, email)
    mine = 0 if user is None else sum(1 for r in rows if refusal(r, user, email) is None)
    return mine, len(rows)


def needs_me_count(s: Session, email: str) -> int:
    """The badge."""
    return counts(s, email)[0]


def next_for(s: Session, email: str, after: int) -> int | None:
    """The review to open after deciding `after`: the first that still needs this viewer."""
    return next((v["id"] for v in pending(s, email) if v["needs_me"] and v["id"] != after), None)


def state(s: Session) -> str:
    """A short tag that changes whenever any queue would look different."""
    pend = s.execute(
        select(func.count(Review.id), func.max(Review.id)).where(Review.status == "pending")
    ).one()
    decided = s.execute(select(func.max(Review.decided_at), func.max(Review.id),
                               func.max(Review.requester_gone_at))).one()
    votes = s.scalar(select(func.max(Vote.id)))
    # Reviews also leave the queue, and holds end, by time passing: the minute is part of it.
    basis = f"{pend[0]}|{pend[1]}|{decided[0]}|{decided[1]}|{decided[2]}|{votes}|{utcnow():%Y%m%d%H%M}"
    return hashlib.sha256(basis.encode()).hexdigest()[:16]
