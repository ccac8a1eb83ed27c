"""The review queue: pending first, live updates by polling, and votes through app.approvals."""
from __future__ import annotations

import hashlib

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from app import approvals, windows as window_approvals
from app.db import session_scope
from app.models import Review, Vote, utcnow
from app.portal.filters import iso
from app.portal.present import review_view, split_http
from app.portal.security import VIEW, VOTE, requires

bp = Blueprint("reviews", __name__)
RECENT = 25
WINDOW_CHOICES = (15, 60, 240, 480, 1440)


def queue_state(s) -> str:
    """A short tag that changes whenever the queue would look different."""
    pending = s.execute(
        select(func.count(Review.id), func.max(Review.id)).where(Review.status == "pending")
    ).one()
    decided = s.execute(select(func.max(Review.decided_at), func.max(Review.id),
                               func.max(Review.requester_gone_at))).one()
    votes = s.scalar(select(func.max(Vote.id)))
    # Reviews also leave the queue by running out of time, so the minute is part of it.
    basis = f"{pending[0]}|{pending[1]}|{decided[0]}|{decided[1]}|{decided[2]}|{votes}|{utcnow():%Y%m%d%H%M}"
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def load_queue(s, now=None) -> tuple[list[dict], list[dict]]:
    now = now or utcnow()
    pending_rows = s.scalars(
        select(Review).where(Review.status == "pending", Review.expires_at > now)
        .order_by(Review.expires_at.asc()).limit(200)
    ).all()
    recent_rows = s.scalars(
        select(Review).where(Review.status != "pending").order_by(Review.id.desc()).limit(RECENT)
    ).all()
    return [review_view(r, now) for r in pending_rows], [review_view(r, now) for r in recent_rows]


@bp.get("/reviews")
@requires(*VIEW)
def queue():
    with session_scope() as s:
        pending, recent = load_queue(s)
        state = queue_state(s)
    return render_template("reviews/queue.html", pending=pending, recent=recent, state=state, split_http=split_http)


@bp.get("/reviews/updates")
@requires(*VIEW)
def updates():
    """Polled by the queue page: 204 when nothing changed, else the new list."""
    known = request.args.get("state", "")[:64]
    with session_scope() as s:
        state = queue_state(s)
        if state == known:
            return "", 204
        pending, recent = load_queue(s)
    html = render_template("reviews/_lists.html", pending=pending, recent=recent, split_http=split_http)
    return jsonify(state=state, pending=len(pending), html=html)


@bp.get("/reviews/<id:review_id>")
@requires(*VIEW)
def detail(review_id: int):
    with session_scope() as s:
        row = s.get(Review, review_id)
        if row is None:
            abort(404)
        review = review_view(row, full=True)
    me = current_user
    voted = next((v for v in review["votes"] if v["approver"] == me.email.lower()), None)
    eligible = (not review["approver_groups"] and "admin" in me.roles) or bool(me.groups & set(review["approver_groups"]))
    return render_template("reviews/detail.html", r=review, voted=voted, can_vote=me.can(VOTE),
                           eligible=eligible, windows=WINDOW_CHOICES, split_http=split_http)


@bp.post("/reviews/<id:review_id>/vote")
@requires(*VOTE)
def vote(review_id: int):
    action = request.form.get("action", "")
    reason = (request.form.get("reason") or "").strip()[:2000]
    window = None
    if action == "approve":
        decision = "approve"
    elif action == "approve_window":
        decision = "approve"
        try:
            window = int(request.form.get("window_minutes", ""))
        except ValueError:
            flash("Choose how many minutes the approval should last.", "error")
            return redirect(url_for(".detail", review_id=review_id))
    elif action == "reject":
        decision = "reject"
        if not reason:
            flash("A rejection needs a reason: the requester sees it.", "error")
            return redirect(url_for(".detail", review_id=review_id))
    else:
        abort(400)
    try:
        with session_scope() as s:
            review = approvals.vote(s, review_id, voter_email=current_user.email, decision=decision,
                                    reason=reason, window_minutes=window, via="portal")
            status = review.status
    except approvals.VoteError as exc:
        flash(f"Your vote was not counted: {exc.message}", "error")
        return redirect(url_for(".detail", review_id=review_id))
    if status == "pending":
        flash(f"Your approval of review #{review_id} was counted; more approvals are needed.", "ok")
    else:
        flash(f"Review #{review_id} is {status}.", "ok")
    return redirect(url_for(".queue") if request.form.get("back") == "queue" else url_for(".detail", review_id=review_id))


# -- window approvals -------------------------------------------------------------------


@bp.get("/windows")
@requires(*VIEW)
def windows():
    """Window approvals in force: exactly what each lets through, and until when."""
    with session_scope() as s:
        rows = [{
            "id": fpa.id, "review_id": review.id, "service_account": fpa.service_account,
            "connection": fpa.connection, "rule": fpa.rule, "protocol": review.protocol,
            "shape": review.shape or review.operation, "expires_at": iso(fpa.expires_at),
            "granted_by": ", ".join((review.details or {}).get("approvers") or [review.decided_by or "?"]),
        } for fpa, review in window_approvals.active_windows(s)]
    return render_template("reviews/windows.html", windows=rows, can_revoke=current_user.can(VOTE))


@bp.post("/windows/<id:window_id>/revoke")
@requires(*VOTE)
def revoke_window(window_id: int):
    try:
        with session_scope() as s:
            fpa = window_approvals.revoke_window(s, window_id, by=current_user.email.lower())
            flash(f"Window {window_id} (review #{fpa.review_id}) is revoked: that shape asks again from now on.", "ok")
    except approvals.VoteError as exc:
        flash(f"Nothing was revoked: {exc.message}", "error")
    return redirect(url_for(".windows"))
