"""Review lifecycle: create, vote, expire, use an approval, and await a decision.

The portal and the Slack bot both call `vote`; the gate calls `standing_approval`,
`find_pending`, `create_review` and `wait_for_decision`. Rules that hold everywhere:
no self-approval, one rejection rejects, approvals count per distinct voter, an
approve-once review lets exactly one operation through.

Every state change is audited and announced on the bus (`reviews` for queue
watchers, `review:<id>` for whoever waits on that review), in the same transaction.
"""
from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app import audit, bus
from app.config import settings
from app.db import session_scope
from app.models import FingerprintApproval, Review, User, Vote, utcnow
from app.binding import shape_text
from app.types import Operation, Principal, ReviewSpec, Verdict

MAX_WINDOW_MINUTES = 1440
# A lost wake-up costs at most this long: waiters re-read the review this often anyway.
SAFETY_INTERVAL = 1.0


class VoteError(Exception):
    """A vote that cannot be counted; `message` is safe to show to the voter."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    out: dict = {"operation": audit.scrub(_describe(op))[:2000]}
    if op.params:
        out["params"] = [None if p is None else audit.scrub(p)[:500] for p in op.params]
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
        operation=audit.scrub(_describe(operation)),
        fingerprint=operation.fingerprint,
        binding=operation.binding,
        shape=audit.scrub(shape_text(operation)),
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
            **({"params": [None if p is None else audit.scrub(p) for p in operation.params]}
               if operation.params else {}),
            **({"body": operation.body_summary} if operation.body_summary else {}),
            **({"headers": [list(h) for h in operation.headers]} if operation.headers else {}),
            **({"body_text": operation.body_text} if operation.body_text else {}),
            **({"justification": audit.scrub(operation.reason)[:1000]} if operation.reason else {}),
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


def _lock_review(session: Session, review_id: int) -> Review | None:
    """Load the review for update, so concurrent votes and expiry take turns on it."""
    if session.get_bind().dialect.name == "sqlite":
        # A write takes SQLite's single write lock now; reads after it see the truth.
        session.execute(text("UPDATE reviews SET id = id WHERE id = :id"), {"id": review_id})
        stmt = select(Review).where(Review.id == review_id)
    else:
        stmt = select(Review).where(Review.id == review_id).with_for_update()
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def _requester_ids(review: Review) -> set[str]:
    req = review.details.get("requester") or {}
    ids = {review.service_account, req.get("service_account"), req.get("subject")}
    return {str(i).strip().lower() for i in ids if i}


def vote_refusal(review: Review, user: User | None, email: str) -> str | None:
    """Why `email` may not vote on `review`, or None when they may.

    The one eligibility rule for the portal's buttons and badge, Slack and the API, and
    what `vote` enforces: showing buttons to someone the vote would refuse is a lie.
    """
    email = (email or "").strip().lower()
    requester = _requester_ids(review)
    if email in requester:
        return "the requester cannot vote on its own review"
    if user is None or not user.active:
        return f"{email} is not an active airlock user"
    if user.oidc_subject and user.oidc_subject.lower() in requester:
        return "the requester cannot vote on its own review"
    if review.groups:
        if not user.group_names & set(review.groups):
            return f"{email} is not in an approver group of this review ({', '.join(review.groups)})"
    elif "admin" not in (user.roles or []):
        # A rule that names no approver group is approved by admins only (fail closed).
        return "only an admin may decide a review without approver groups"
    return None


def _check_voter(session: Session, review: Review, email: str) -> None:
    user = session.scalars(select(User).where(func.lower(User.email) == email)).first()
    refusal = vote_refusal(review, user, email)
    if refusal:
        raise VoteError(refusal)


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
        raise VoteError(f"review {review_id} does not exist")
    prior = next((v for v in review.votes if v.approver.lower() == email), None)
    if prior is not None:
        # A double click, or the same vote from Slack and the portal: count it once.
        if prior.decision == decision and prior.window_minutes == window_minutes:
            return review
        raise VoteError(f"{email} has already voted {prior.decision} on review {review_id}")
    if review.status != "pending":
        raise VoteError(f"review {review_id} is already {review.status}")
    if via == "slack" and not review.slack:
        # The rule wants the portal's stronger sign-in: Slack is not a door for it.
        raise VoteError("this rule must be approved in the portal, not from Slack")
    if review.expires_at <= now:
        raise VoteError(f"review {review_id} has expired")
    _check_voter(session, review, email)
    if window_minutes is not None:
        if decision != "approve":
            raise VoteError("an approval window only applies to an approval")
        if not 1 <= int(window_minutes) <= MAX_WINDOW_MINUTES:
            raise VoteError(f"the approval window must be 1..{MAX_WINDOW_MINUTES} minutes")
        if not review.fingerprint:
            raise VoteError("this operation has no fingerprint; approve it once instead")

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


def current_status(review_id: int) -> str:
    """The review's status as a waiter sees it: a pending review past its time is expired."""
    with session_scope() as s:
        row = s.execute(select(Review.status, Review.expires_at).where(Review.id == review_id)).first()
    if row is None:
        raise LookupError(f"review {review_id} does not exist")
    if row.status == "pending" and row.expires_at <= utcnow():
        return "expired"
    return row.status


async def wait_for_decision(review_id: int, timeout: float, *, safety_interval: float = SAFETY_INTERVAL,
                            gone: asyncio.Future | None = None) -> str:
    """Wait up to `timeout` s; return approved, rejected, expired, or pending, or
    "withdrawn" as soon as `gone` completes (the requester left)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout)
    b = bus.get_bus()
    # Watch first, then read: a decision landing between the two still wakes us. That
    # holds only once the listener is up; if it was not yet, read again when it is.
    with b.watch(f"review:{review_id}") as watch:
        if gone is not None:
            gone.add_done_callback(lambda _: watch.fire())
        covered = b.is_ready
        while True:
            if gone is not None and gone.done():
                return "withdrawn"
            status = await asyncio.to_thread(current_status, review_id)
            remaining = deadline - loop.time()
            if status != "pending" or remaining <= 0:
                return status
            if not covered:
                covered = True
                if await b.ready(min(remaining, 2.0)):
                    continue
            # Jitter: many holds started together must not re-read the store in lockstep.
            await watch.wait(min(remaining, safety_interval * random.uniform(0.75, 1.25)))


def wait_for_decision_sync(review_id: int, timeout: float, *, safety_interval: float = SAFETY_INTERVAL) -> str:
    deadline = time.monotonic() + max(0.0, timeout)
    watch = bus.SyncWatch(f"review:{review_id}")
    while True:
        status = current_status(review_id)
        remaining = deadline - time.monotonic()
        if status != "pending" or remaining <= 0:
            return status
        watch.wait(min(remaining, safety_interval))
