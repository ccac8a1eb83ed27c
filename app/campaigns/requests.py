"""Just-in-time access requests: ask for a connection for a while, with a reason.

Approvers decide a request as a review (app.approvals): the same approver groups,
quorum, no self-approval, one rejection rejects, Slack buttons and the portal queue.
Approval makes a grant that expires (`source="request"`); the housekeeping job
revokes it at expiry, which ends the sessions still open under it. A pending request
has an expiry of its own: the review's.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import approvals, audit
from app.campaigns.runs import CampaignError
from app.models import AccessRequest, Connection, Grant, Review, ServiceAccount, user_by_email, utcnow
from app.types import Operation, Principal, ReviewSpec, Verdict
from app.versions import bump_version

MAX_ACCESS = timedelta(days=7)
PENDING_FOR = timedelta(hours=24)  # how long a request waits for approvers by default
PROTOCOL = "access"  # reviews of requests: no adapter ever asks the gate about this protocol


def approver_groups(s: Session, conn: Connection) -> list[str]:
    """The connection owner's group, or the groups its owner belongs to; none means admins only."""
    owner = (conn.owner or "").strip()
    if owner.startswith("group:"):
        return [owner[6:]]
    user = user_by_email(s, owner) if owner else None
    return sorted(user.group_names) if user is not None else []


def create(s: Session, *, service_account: str, connection: str, duration: timedelta, reason: str,
           requested_by: str, pending_for: timedelta = PENDING_FOR, now: datetime | None = None) -> AccessRequest:
    now = now or utcnow()
    reason = (reason or "").strip()
    sa = s.scalars(select(ServiceAccount).where(ServiceAccount.name == service_account)).first()
    conn = s.scalars(select(Connection).where(Connection.name == connection)).first()
    if sa is None or sa.disabled:
        raise CampaignError(f"unknown service account {service_account!r}")
    if conn is None:
        raise CampaignError(f"unknown connection {connection!r}")
    if not reason:
        raise CampaignError("a request needs a reason: approvers see it")
    if not timedelta(minutes=1) <= duration <= MAX_ACCESS:
        raise CampaignError(f"access can be requested for 1 minute up to {MAX_ACCESS.days} days")
    if not timedelta(minutes=1) <= pending_for <= timedelta(days=7):
        raise CampaignError("a request can wait for approvers between 1 minute and 7 days")
    live = s.scalars(select(Grant).where(Grant.service_account_id == sa.id, Grant.connection_id == conn.id)).first()
    if live is not None and live.active_at(now):
        raise CampaignError(f"{service_account} already has access to {connection}")
    req = AccessRequest(service_account=sa.name, connection=conn.name, requested_by=requested_by, reason=reason,
                        duration_seconds=int(duration.total_seconds()), status="pending", created_at=now,
                        expires_at=now + pending_for)
    s.add(req)
    s.flush()
    text = f"access to {conn.name} for {_span(duration)}: {reason}"
    op = Operation(protocol=PROTOCOL, connection=conn.name, kind="access", text=text,
                   fingerprint=hashlib.sha256(f"access-request:{req.id}:{now.isoformat()}".encode()).hexdigest())
    spec = ReviewSpec(groups=tuple(approver_groups(s, conn)), count=1, hold_seconds=0,
                      expires_after_seconds=pending_for.total_seconds())
    # The requester (the person, and the service account) may not approve it: approvals checks both.
    principal = Principal(service_account=sa.name, subject=requested_by)
    review = approvals.create_review(s, principal=principal, operation=op, now=now,
                                     verdict=Verdict("review", rule="access-request", message=reason, review=spec))
    review.details = {**review.details, "access_request_id": req.id}
    req.review_id = review.id
    audit.append(s, requested_by, "access.request", f"{sa.name}->{conn.name}", {
        "request_id": req.id, "review_id": review.id, "duration_seconds": req.duration_seconds, "reason": reason,
        "pending_until": req.expires_at.isoformat()})
    return req


def settle(s: Session, now: datetime | None = None) -> dict[str, int]:
    """Carry decided reviews over to their requests: approved -> a grant that expires."""
    now = now or utcnow()
    approvals.expire_reviews(s, now)
    counts = {"approved": 0, "rejected": 0, "expired": 0}
    pending = s.scalars(select(AccessRequest).where(AccessRequest.status == "pending").order_by(AccessRequest.id)).all()
    for req in pending:
        review = s.get(Review, req.review_id) if req.review_id else None
        status = review.status if review is not None else "expired"
        if status == "pending" and req.expires_at <= now:
            status = "expired"
        if status == "pending":
            continue
        req.decided_at = (review.decided_at if review is not None else None) or now
        req.decided_by = review.decided_by if review is not None else "system"
        if status == "approved":
            _grant(s, req, now)
        req.status = status if status in counts else "expired"
        counts[req.status] += 1
        audit.append(s, req.decided_by or "system", f"access.{req.status}", f"{req.service_account}->{req.connection}",
                     {"request_id": req.id, "review_id": req.review_id, "grant_id": req.grant_id,
                      "access_until": req.access_until.isoformat() if req.access_until else None})
    return counts


def _grant(s: Session, req: AccessRequest, now: datetime) -> None:
    sa = s.scalars(select(ServiceAccount).where(ServiceAccount.name == req.service_account)).one()
    conn = s.scalars(select(Connection).where(Connection.name == req.connection)).one()
    grant = s.scalars(select(Grant).where(Grant.service_account_id == sa.id, Grant.connection_id == conn.id)).first()
    until = now + timedelta(seconds=req.duration_seconds)
    if grant is not None and grant.active_at(now):
        # Standing access meanwhile: leave it alone, but never shorten or extend it silently.
        req.grant_id, req.access_until = grant.id, grant.expires_at
        return
    if grant is None:
        grant = Grant(service_account=sa, connection=conn)
        s.add(grant)
    grant.expires_at, grant.revoked_at, grant.revoked_by = until, None, None
    grant.source, grant.created_by, grant.created_at = "request", req.requested_by, now
    s.flush()
    bump_version(s)
    audit.append(s, req.decided_by or "system", "grant.add", f"{sa.name}->{conn.name}", {
        "grant_id": grant.id, "expires": until.isoformat(), "access_request_id": req.id})
    req.grant_id, req.access_until = grant.id, until


def _span(d: timedelta) -> str:
    minutes = int(d.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"
