"""Reviews: open one for a held operation, attach a retry to it, flag a requester gone.

Reviewers see the operation, never a credential typed into it (app.redaction).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import audit, bus
from app.binding import shape_text
from app.config import settings
from app.models import Review, utcnow
from app.redaction import scrub
from app.types import Operation, Principal, ReviewSpec, Verdict


def review_url(review_id: int) -> str:
    return f"{settings().public_url}/reviews/{review_id}"


def _describe(op: Operation) -> str:
    if op.text:
        return op.text
    if op.command:
        return op.command
    if op.method:
        return f"{op.method} {op.host or ''}{op.path or ''}"
    return op.kind


def ran(op: Operation) -> dict:
    """What actually ran, for the `review.used` audit entry: the operation, not a hash."""
    out: dict = {"operation": scrub(_describe(op))[:2000]}
    if op.params:
        out["params"] = [None if p is None else scrub(p)[:500] for p in op.params]
    if op.body_summary:
        out["body"] = op.body_summary
    return out


def create_review(
    session: Session,
    *,
    principal: Principal,
    operation: Operation,
    verdict: Verdict,
    run_id: str | None = None,
    session_id: str | None = None,
    now: datetime | None = None,
    hold_seconds: float | None = None,
) -> Review:
    """Open a pending review. It stays open for `expires_after`, longer than the
    runtime's hold, so a runtime that gave up can retry once it is approved."""
    now = now or utcnow()
    spec = verdict.review or ReviewSpec()
    expires_after = float(spec.expires_after_seconds)
    review = Review(
        status="pending",
        service_account=principal.service_account,
        connection=operation.connection,
        protocol=operation.protocol,
        kind=operation.kind,
        # Reviewers see the statement, but never a credential typed into it.
        operation=scrub(_describe(operation)),
        fingerprint=operation.fingerprint,
        binding=operation.binding,
        shape=scrub(shape_text(operation)),
        rule=verdict.rule or "",
        message=verdict.message,
        groups=list(spec.groups),
        required=max(1, int(spec.count)),
        slack=spec.slack,
        channel=spec.channel,
        run_id=run_id,
        session_id=session_id,
        details={
            "requester": {"service_account": principal.service_account, "subject": principal.subject,
                          "via": principal.via},
            "expires_after_seconds": expires_after,
            "hold_seconds": float(spec.hold_seconds),
            # When the runtime stops waiting: the deadline a woken approver races.
            "held_at": now.isoformat(),
            "hold_until": (now + timedelta(seconds=float(
                spec.hold_seconds if hold_seconds is None else hold_seconds))).isoformat(),
            "targets": list(operation.targets),
            "attributes": sorted(operation.attributes),
            **({"params": [None if p is None else scrub(p) for p in operation.params]}
               if operation.params else {}),
            **({"body": operation.body_summary} if operation.body_summary else {}),
            **({"headers": [list(h) for h in operation.headers]} if operation.headers else {}),
            **({"body_text": operation.body_text} if operation.body_text else {}),
            **({"justification": scrub(operation.reason)[:1000]} if operation.reason else {}),
        },
        created_at=now,
        expires_at=now + timedelta(seconds=expires_after),
    )
    session.add(review)
    session.flush()
    audit.append(session, principal.service_account, "review.create", f"review:{review.id}", {
        "review_id": review.id, "connection": review.connection, "protocol": review.protocol,
        "kind": review.kind, "rule": review.rule, "fingerprint": review.fingerprint,
        "operation": review.operation[:1000], "run_id": run_id, "session_id": session_id,
    })
    bus.publish(session, "reviews", str(review.id))
    return review


def held_again(session: Session, review: Review, hold_seconds: float, now: datetime | None = None) -> None:
    """An identical retry waits on a review already open: its agent is waiting again."""
    now = now or utcnow()
    review.details = {**(review.details or {}), "held_at": now.isoformat(),
                      "hold_until": (now + timedelta(seconds=float(hold_seconds))).isoformat()}
    bus.publish(session, "reviews", str(review.id))


def requester_gone(session: Session, review_id: int, service_account: str, reason: str,
                   now: datetime | None = None) -> None:
    """The held runtime disconnected or cancelled: nothing was sent to the target. The
    review stays as it is (approving it still lets an identical retry through once); it
    is flagged so approvers know nobody is waiting."""
    now = now or utcnow()
    session.execute(
        update(Review).where(Review.id == review_id).values(requester_gone_at=now)
        .execution_options(synchronize_session=False)
    )
    audit.append(session, service_account, "review.withdrawn", f"review:{review_id}",
                 {"review_id": review_id, "reason": reason})
    bus.publish(session, "reviews", str(review_id))


def find_pending(
    session: Session, *, service_account: str, connection: str, binding: str, rule: str = "",
    now: datetime | None = None,
) -> Review | None:
    """The open review of the exact same operation, so a retry re-attaches to it (never
    one that merely has the same shape: approvers would approve what they never saw)."""
    if not binding:
        return None
    return session.scalars(
        select(Review).where(
            Review.service_account == service_account, Review.connection == connection,
            Review.binding == binding, Review.rule == (rule or ""), Review.status == "pending",
            Review.expires_at > (now or utcnow()),
        ).order_by(Review.id.desc()).limit(1)
    ).first()
