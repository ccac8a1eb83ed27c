"""The review queue and the review page: what needs my vote first, live updates by
polling, and votes through app.approvals."""
from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from app import approvals, windows as window_approvals
from app.db import session_scope
from app.models import Review
from app.portal import queue as q
from app.portal import review_context
from app.portal.filters import iso
from app.portal.present import review_view, split_http
from app.portal.security import VIEW, VOTE, requires

bp = Blueprint("reviews", __name__)
WINDOW_CHOICES = (15, 60, 240, 480, 1440)
VIEWS = ("mine", "all")


def _view_arg() -> str:
    # Someone who cannot vote at all (an auditor) has no "my votes" queue to default to.
    default = "mine" if current_user.can(VOTE) else "all"
    view = request.args.get("view", default)
    return view if view in VIEWS else default


def _lists(s, view: str) -> tuple[list[dict], list[dict], int, int]:
    everything = q.pending(s, current_user.email)
    mine = [r for r in everything if r["needs_me"]]
    return (mine if view == "mine" else everything), q.recent(s), len(mine), len(everything)


@bp.get("/reviews")
@requires(*VIEW)
def queue():
    view = _view_arg()
    with session_scope() as s:
        pending, recent, n_mine, n_all = _lists(s, view)
        state = q.state(s)
    return render_template("reviews/queue.html", pending=pending, recent=recent, state=state, view=view,
                           n_mine=n_mine, n_all=n_all, split_http=split_http)


@bp.get("/reviews/updates")
@requires(*VIEW)
def updates():
    """Polled by the queue page: 204 when nothing changed, else the new lists."""
    known = request.args.get("state", "")[:64]
    view = _view_arg()
    with session_scope() as s:
        state = q.state(s)
        if state == known:
            return "", 204
        pending, recent, n_mine, n_all = _lists(s, view)
    html = render_template("reviews/_lists.html", pending=pending, recent=recent, view=view, split_http=split_http)
    return jsonify(state=state, pending=n_all, mine=n_mine, html=html)


@bp.get("/reviews/badge")
@requires(*VIEW)
def badge():
    """Polled by every page: the count of reviews that need the viewer (badge and title)."""
    known = request.args.get("state", "")[:64]
    with session_scope() as s:
        state = q.state(s)
        if state == known:
            return "", 204
        mine, pending = q.counts(s, current_user.email)
        return jsonify(state=state, mine=mine, counts={"pending": pending, "mine": mine})


def _detail_context(s, row: Review) -> dict:
    review = review_view(row, full=True)
    user = q.viewer(s, current_user.email)
    refusal = q.refusal(row, user, current_user.email)
    voted = next((v for v in review["votes"] if v["approver"] == current_user.email.lower()), None)
    return {"r": review, "voted": voted, "can_vote": current_user.can(VOTE), "refusal": refusal,
            "eligible": refusal is None, "windows": WINDOW_CHOICES, "split_http": split_http,
            "uses": review_context.uses(s, row), "tag": _tag(row)}


def _tag(row: Review) -> str:
    return f"{row.status}|{len(row.votes)}|{iso(row.requester_gone_at)}|{iso(row.consumed_at)}"


@bp.get("/reviews/<id:review_id>")
@requires(*VIEW)
def detail(review_id: int):
    with session_scope() as s:
        row = s.get(Review, review_id)
        if row is None:
            abort(404, description=f"There is no review #{review_id}.")
        ctx = _detail_context(s, row)
        ctx["history"] = review_context.history(s, row)
        ctx["steps"] = review_context.run_steps(s, row)
    return render_template("reviews/detail.html", **ctx)


@bp.get("/reviews/<id:review_id>/updates")
@requires(*VIEW)
def detail_updates(review_id: int):
    """Polled by an open review page: the votes and decision panel when anything changed
    (someone else decided: the buttons go away and say who)."""
    known = request.args.get("state", "")[:200]
    with session_scope() as s:
        row = s.get(Review, review_id)
        if row is None:
            abort(404)
        if _tag(row) == known:
            return "", 204
        ctx = _detail_context(s, row)
    return jsonify(state=ctx["tag"], status=ctx["r"]["status"], html=render_template("reviews/_decision.html", **ctx))


def _choice() -> tuple[str, int | None, str] | str:
    """(decision, window minutes, comment) from the form, or an error to show."""
    action = request.form.get("action", "")
    reason = (request.form.get("reason") or "").strip()[:2000]
    comment = (request.form.get("comment") or "").strip()[:2000]
    if action == "approve":
        return "approve", None, comment
    if action == "approve_window":
        try:
            return "approve", int(request.form.get("window_minutes", "")), comment
        except ValueError:
            return "Choose how many minutes the approval should last."
    if action == "reject":
        return ("reject", None, reason) if reason else "A rejection needs a reason: the requester sees it."
    abort(400)


@bp.post("/reviews/<id:review_id>/vote")
@requires(*VOTE)
def vote(review_id: int):
    choice = _choice()
    if isinstance(choice, str):
        flash(choice, "error")
        return redirect(url_for(".detail", review_id=review_id))
    decision, window, reason = choice
    try:
        with session_scope() as s:
            review = approvals.vote(s, review_id, voter_email=current_user.email, decision=decision,
                                    reason=reason, window_minutes=window, via="portal")
            status = review.status
    except approvals.VoteError as exc:
        approvals.record_refused_vote(current_user.email, review_id, decision, exc.message, "portal")
        flash(f"Your vote was not counted: {exc.message}", "error")
        return redirect(url_for(".detail", review_id=review_id))
    if status == "pending":
        flash(f"Your approval of review #{review_id} was counted; more approvals are needed.", "ok")
    else:
        flash(f"Review #{review_id} is {status}.", "ok")
    # The next person woken at 2 a.m. should not have to find the next one themselves.
    with session_scope() as s:
        nxt = q.next_for(s, current_user.email, review_id)
    if nxt is not None:
        return redirect(url_for(".detail", review_id=nxt, after=review_id))
    flash("Nothing else needs your vote.", "info")
    return redirect(url_for(".detail", review_id=review_id))


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
    except approvals.WindowNotFound as exc:
        abort(404, description=exc.message)
    except approvals.VoteError as exc:
        flash(f"Nothing was revoked: {exc.message}", "error")
    return redirect(url_for(".windows"))
