"""Grants: who may use which connection, standing or until a time. Add, expire, revoke."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from app.campaigns.usage import last_used as grant_last_used
from app.db import session_scope
from app.models import Connection, Grant, ServiceAccount, utcnow
from app.changes import ChangeError, add_grant, expire_grant, revoke_grant
from app.portal.queries import BadFilter, parse_time
from app.portal.security import ADMIN, INVENTORY_READ, requires

bp = Blueprint("grants", __name__)


def grant_dict(g: Grant, now=None, last_used=None) -> dict:
    now = now or utcnow()
    state = "revoked" if g.revoked_at else "expired" if g.expires_at and g.expires_at <= now else "active"
    return {
        "id": g.id, "service_account": g.service_account.name, "connection": g.connection.name,
        "expires_at": g.expires_at.isoformat() if g.expires_at else None,
        "revoked_at": g.revoked_at.isoformat() if g.revoked_at else None, "revoked_by": g.revoked_by,
        "source": g.source, "created_by": g.created_by, "created_at": g.created_at.isoformat(), "state": state,
        "last_used": last_used.isoformat() if last_used else None,
    }


def last_used(s, g: Grant):
    """When an operation last ran under this grant: the access reviews' definition."""
    return grant_last_used(s, g)


@bp.get("/grants")
@requires(*INVENTORY_READ)
def index():
    show = request.args.get("show", "active")
    now = utcnow()
    with session_scope() as s:
        rows = s.scalars(select(Grant).order_by(Grant.id.desc()).limit(1000)).all()
        grants = [grant_dict(g, now, last_used(s, g)) for g in rows]
        accounts = s.scalars(select(ServiceAccount.name).where(ServiceAccount.disabled.is_(False))
                             .order_by(ServiceAccount.name)).all()
        connections = s.scalars(select(Connection.name).order_by(Connection.name)).all()
    if show == "active":
        grants = [g for g in grants if g["state"] == "active"]
    return render_template("grants/index.html", grants=grants, accounts=accounts, connections=connections, show=show)


@bp.post("/grants")
@requires(*ADMIN)
def add():
    f = request.form
    try:
        expires = parse_time(f.get("expires")) if f.get("expires") else None
        with session_scope() as s:
            add_grant(s, current_user.email, f.get("service_account", ""), f.get("connection", ""), expires)
    except (ChangeError, BadFilter) as exc:
        flash("Grant not added: " + "; ".join(getattr(exc, "problems", [str(exc)])), "error")
    else:
        flash(f"{f.get('service_account')} may now use {f.get('connection')}"
              + (f" until {expires:%Y-%m-%d %H:%M} UTC." if expires else "."), "ok")
    return redirect(url_for(".index"))


@bp.post("/grants/<id:grant_id>/expire")
@requires(*ADMIN)
def expire(grant_id: int):
    try:
        at = parse_time(request.form.get("at")) if request.form.get("at") else None
        with session_scope() as s:
            expire_grant(s, current_user.email, grant_id, at)
    except (ChangeError, BadFilter) as exc:
        flash("; ".join(getattr(exc, "problems", [str(exc)])), "error")
    else:
        flash(f"Grant {grant_id} " + (f"expires {at:%Y-%m-%d %H:%M} UTC." if at else "expired now."), "ok")
    return redirect(url_for(".index"))


@bp.post("/grants/<id:grant_id>/revoke")
@requires(*ADMIN)
def revoke(grant_id: int):
    try:
        with session_scope() as s:
            revoke_grant(s, current_user.email, grant_id)
    except ChangeError as exc:
        flash("; ".join(exc.problems), "error")
    else:
        flash(f"Grant {grant_id} revoked. It stops working within a second.", "ok")
    return redirect(url_for(".index"))
