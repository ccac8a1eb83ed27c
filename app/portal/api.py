"""JSON API under /api/v1, authenticated with a portal user's API token (Bearer alu_...).

Same roles as the pages; same services behind them (votes go to app.approvals, grant
changes to the portal's audited change functions). Described in /api/v1/openapi.json.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from app import approvals
from app.errors import NotFound
from app.db import session_scope
from app.models import Grant, RecordedSession, Review, SessionEvent
from app.portal import events as ev
from app.portal.audit_views import last_status, run_verify
from app.changes import ChangeError, add_grant, expire_grant, revoke_grant
from app.portal.grants_views import grant_dict, last_used
from app.portal.openapi import spec
from app.portal.present import review_view
from app.portal.queries import (BadFilter, encodable, audit_filters, clean, list_audit, list_sessions, page_size, parse_seq,
                                parse_time, session_dict, session_filters)
from app.portal.security import ADMIN, AUDIT, INVENTORY_READ, VIEW, VOTE, requires

bp = Blueprint("api", __name__, url_prefix="/api/v1")
REVIEW_STATUSES = ("pending", "approved", "rejected", "expired", "all")
MAX_EVENTS = 1000


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return jsonify(error=exc.error, message=exc.message), exc.status


@bp.errorhandler(BadFilter)
def _bad_filter(exc: BadFilter):
    return jsonify(error="bad_request", message=str(exc)), 400


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return data


def _text(data: dict, key: str, *, required: bool = False, limit: int = 2000) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise ApiError(400, "bad_request", f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "bad_request", f"{key} must be a string")
    if "\x00" in value or len(value) > limit or not encodable(value):
        raise ApiError(400, "bad_request", f"{key} must be at most {limit} characters of valid text, without NUL")
    return value


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec())


@bp.get("/me")
@requires(*VIEW)
def me():
    u = g.api_user
    return jsonify(email=u.email, name=u.name, roles=sorted(u.roles), groups=sorted(u.groups))


# -- reviews ---------------------------------------------------------------------------

@bp.get("/reviews")
@requires(*VIEW)
def reviews():
    status = clean(request.args.get("status") or "pending", 20)
    if status not in REVIEW_STATUSES:
        raise BadFilter(f"status must be one of {', '.join(REVIEW_STATUSES)}")
    limit = page_size(request.args.get("limit"))
    before = parse_seq(request.args.get("before"))
    stmt = select(Review)
    if status != "all":
        stmt = stmt.where(Review.status == status)
    if before is not None:
        stmt = stmt.where(Review.id < before)
    with session_scope() as s:
        rows = s.scalars(stmt.order_by(Review.id.desc()).limit(limit + 1)).all()
        items = [review_view(r) for r in rows[:limit]]
    nxt = str(items[-1]["id"]) if len(rows) > limit and items else None
    return jsonify(items=items, next=nxt)


@bp.get("/reviews/<id:review_id>")
@requires(*VIEW)
def review(review_id: int):
    with session_scope() as s:
        row = s.get(Review, review_id)
        if row is None:
            raise ApiError(404, "not_found", f"review {review_id} does not exist")
        return jsonify(review_view(row, full=True))


@bp.post("/reviews/<id:review_id>/vote")
@requires(*VOTE)
def vote(review_id: int):
    data = _body()
    decision = _text(data, "decision", required=True, limit=10)
    if decision not in ("approve", "reject"):
        raise ApiError(400, "bad_request", "decision must be approve or reject")
    reason = _text(data, "reason")
    window = data.get("window_minutes")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise ApiError(400, "bad_request", "window_minutes must be an integer")
    if decision == "reject" and not reason.strip():
        raise ApiError(400, "bad_request", "a rejection needs a reason")
    try:
        with session_scope() as s:
            row = approvals.vote(s, review_id, voter_email=g.api_user.email, decision=decision, reason=reason,
                                 window_minutes=window, via="api")
            out = review_view(row, full=True)
    except approvals.VoteError as exc:
        approvals.record_refused_vote(g.api_user.email, review_id, decision, exc.message, "api")
        if isinstance(exc, NotFound):
            raise ApiError(404, "not_found", exc.message) from None
        raise ApiError(409, "vote_refused", exc.message) from None
    return jsonify(out)


# -- sessions --------------------------------------------------------------------------

@bp.get("/sessions")
@requires(*VIEW)
def sessions():
    f = session_filters(request.args)
    limit = page_size(request.args.get("limit"))
    with session_scope() as s:
        page = list_sessions(s, f, limit=limit, cursor=request.args.get("cursor") or None)
        items = [session_dict(r) for r in page.items]
    return jsonify(items=items, next=page.next_cursor)


@bp.get("/sessions/<session_id>")
@requires(*VIEW)
def session_detail(session_id: str):
    after = parse_seq(request.args.get("after")) or 0
    with session_scope() as s:
        row = s.get(RecordedSession, clean(session_id, 36)) if len(session_id) <= 36 else None
        if row is None:
            raise ApiError(404, "not_found", "no such session")
        rows = s.execute(select(SessionEvent.seq, SessionEvent.t, SessionEvent.kind, SessionEvent.data)
                         .where(SessionEvent.session_id == row.id, SessionEvent.seq > after)
                         .order_by(SessionEvent.seq).limit(MAX_EVENTS + 1)).all()
        out = session_dict(row)
    events = [{"seq": e.seq, "t": e.t, "kind": e.kind, "data": e.data} for e in ev.parse(rows[:MAX_EVENTS])]
    out["events"] = events
    out["next"] = str(events[-1]["seq"]) if len(rows) > MAX_EVENTS else None
    return jsonify(out)


# -- audit -----------------------------------------------------------------------------

@bp.get("/audit")
@requires(*AUDIT)
def audit_list():
    from app.audit import entry_dict

    f = audit_filters(request.args)
    limit = page_size(request.args.get("limit"))
    with session_scope() as s:
        page = list_audit(s, f, limit=limit, before=parse_seq(request.args.get("before")))
        items = [entry_dict(e) for e in page.items]
    return jsonify(items=items, next=page.next_cursor)


def _status_dict(status) -> dict[str, Any]:
    if status is None:
        return {"verified": False}
    r = status.result
    return {"verified": True, "ok": r.ok, "checked": r.checked, "first_bad_seq": r.first_bad_seq, "reason": r.reason,
            "verified_by": status.by, "seconds": round(status.seconds, 3)}


@bp.get("/audit/status")
@requires(*AUDIT)
def audit_status():
    return jsonify(_status_dict(last_status()))


@bp.post("/audit/verify")
@requires(*AUDIT)
def audit_verify():
    return jsonify(_status_dict(run_verify(g.api_user.email)))


# -- grants ----------------------------------------------------------------------------

@bp.get("/grants")
@requires(*INVENTORY_READ)
def grants():
    state = clean(request.args.get("state") or "active", 20)
    if state not in ("active", "all"):
        raise BadFilter("state must be active or all")
    with session_scope() as s:
        rows = s.scalars(select(Grant).order_by(Grant.id.desc()).limit(1000)).all()
        items = [grant_dict(r, last_used=last_used(s, r)) for r in rows]
    if state == "active":
        items = [i for i in items if i["state"] == "active"]
    return jsonify(items=items)


def _grant_change(fn, *args):
    try:
        with session_scope() as s:
            grant = fn(s, g.api_user.email, *args)
            s.flush()
            return grant_dict(grant)
    except ChangeError as exc:
        if isinstance(exc, NotFound):
            raise ApiError(404, "not_found", "; ".join(exc.problems)) from None
        raise ApiError(409, "refused", "; ".join(exc.problems)) from None


@bp.post("/grants")
@requires(*ADMIN)
def grant_add():
    data = _body()
    expires = _text(data, "expires_at", limit=64)
    at = parse_time(expires) if expires else None
    out = _grant_change(add_grant, _text(data, "service_account", required=True, limit=200),
                        _text(data, "connection", required=True, limit=200), at)
    return jsonify(out), 201


@bp.post("/grants/<id:grant_id>/expire")
@requires(*ADMIN)
def grant_expire(grant_id: int):
    data = request.get_json(silent=True) or {}
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    at_text = _text(data, "at", limit=64)
    return jsonify(_grant_change(expire_grant, grant_id, parse_time(at_text) if at_text else None))


@bp.post("/grants/<id:grant_id>/revoke")
@requires(*ADMIN)
def grant_revoke(grant_id: int):
    return jsonify(_grant_change(revoke_grant, grant_id))

