"""Just-in-time access requests: ask in the portal or the API; approvers decide as a review."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from app import approvals
from app.campaigns import requests as jit
from app.campaigns.runs import CampaignError
from app.db import session_scope
from app.errors import NotFound
from app.models import AccessRequest, Connection, ServiceAccount
from app.policy import parse_duration
from app.portal.api import ApiError, _body, _text, bp as api
from app.portal.security import VIEW, VOTE, principal, requires

bp = Blueprint("access_requests", __name__)


def request_dict(r: AccessRequest) -> dict:
    return {"id": r.id, "service_account": r.service_account, "connection": r.connection, "status": r.status,
            "reason": r.reason, "requested_by": r.requested_by, "duration_seconds": r.duration_seconds,
            "created_at": r.created_at.isoformat(), "pending_until": r.expires_at.isoformat(),
            "decided_by": r.decided_by, "access_until": r.access_until.isoformat() if r.access_until else None,
            "review_id": r.review_id, "review_url": approvals.review_url(r.review_id) if r.review_id else None}


def _durations(form) -> tuple[timedelta, timedelta]:
    try:
        return (timedelta(seconds=parse_duration(form.get("for") or "")),
                timedelta(seconds=parse_duration(form.get("pending_for") or "24h")))
    except (TypeError, ValueError):
        raise CampaignError("durations look like 30m, 2h or 1d") from None


@bp.get("/access-requests")
@requires(*VIEW)
def index():
    with session_scope() as s:
        jit.settle(s)  # decisions made meanwhile show as they are
    with session_scope() as s:
        rows = [request_dict(r) for r in s.scalars(select(AccessRequest).order_by(AccessRequest.id.desc()).limit(200))]
        accounts = s.scalars(select(ServiceAccount.name).where(ServiceAccount.disabled.is_(False))
                             .order_by(ServiceAccount.name)).all()
        connections = s.scalars(select(Connection.name).order_by(Connection.name)).all()
    return render_template("campaigns/requests.html", rows=rows, accounts=accounts, connections=connections,
                           can_vote=principal().can(VOTE))


@bp.post("/access-requests")
@requires(*VIEW)
def create():
    f = request.form
    try:
        duration, pending_for = _durations(f)
        with session_scope() as s:
            req = jit.create(s, service_account=f.get("service_account", ""), connection=f.get("connection", ""),
                             duration=duration, reason=f.get("reason", ""), requested_by=principal().email,
                             pending_for=pending_for)
            rid = req.id
    except CampaignError as exc:
        flash("Request not made: " + exc.message, "error")
    else:
        flash(f"Access request {rid} is waiting for approvers.", "ok")
    return redirect(url_for(".index"))


@bp.post("/access-requests/<id:request_id>/<any(approve, reject):decision>")
@requires(*VOTE)
def decide(request_id: int, decision: str):
    try:
        with session_scope() as s:
            req = s.get(AccessRequest, request_id)
            if req is None or req.review_id is None:
                raise approvals.AccessRequestNotFound(f"access request {request_id} does not exist")
            approvals.vote(s, req.review_id, voter_email=principal().email, decision=decision,
                           reason=request.form.get("reason", ""))
        with session_scope() as s:
            jit.settle(s)
    except NotFound as exc:  # the request, or the review it is decided as
        abort(404, description=exc.message)
    except approvals.VoteError as exc:
        flash(exc.message, "error")
    else:
        flash(f"Access request {request_id}: your {decision} is counted.", "ok")
    return redirect(url_for(".index"))


# -- API ---------------------------------------------------------------------------------

@api.post("/access-requests")
@requires(*VIEW)
def api_create():
    data = _body()
    try:
        duration = timedelta(seconds=parse_duration(_text(data, "for", required=True, limit=20)))
        pending_for = timedelta(seconds=parse_duration(_text(data, "pending_for", limit=20) or "24h"))
    except (TypeError, ValueError):
        raise ApiError(400, "bad_request", "for and pending_for are durations like 30m, 2h or 1d") from None
    try:
        with session_scope() as s:
            req = jit.create(s, service_account=_text(data, "service_account", required=True, limit=200),
                             connection=_text(data, "connection", required=True, limit=200), duration=duration,
                             reason=_text(data, "reason", required=True), requested_by=principal().email,
                             pending_for=pending_for)
            out = request_dict(req)
    except CampaignError as exc:
        raise ApiError(400, "bad_request", exc.message) from None
    return jsonify(out), 201


@api.get("/access-requests/<id:request_id>")
@requires(*VIEW)
def api_get(request_id: int):
    with session_scope() as s:
        jit.settle(s)
    with session_scope() as s:
        req = s.get(AccessRequest, request_id)
        if req is None:
            raise ApiError(404, "not_found", f"access request {request_id} does not exist")
        return jsonify(request_dict(req))
