"""Users and groups: roles, group membership, local accounts."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Group, User, service_account_groups, user_by_email, user_groups
from app.changes import ChangeError, create_local_user, reset_password, update_user
from app.portal.inventory_views import split_list
from app.portal.security import ADMIN, INVENTORY_READ, ROLES, approver_groups, requires

bp = Blueprint("users", __name__)


@bp.get("/users")
@requires(*INVENTORY_READ)
def index():
    with session_scope() as s:
        users = s.scalars(select(User).order_by(User.active.desc(), User.email)).all()
        approvers = approver_groups(s)
        groups = []
        members = dict(s.execute(select(user_groups.c.group_id, func.count()).group_by(user_groups.c.group_id)).all())
        accounts = dict(s.execute(select(service_account_groups.c.group_id, func.count())
                                  .group_by(service_account_groups.c.group_id)).all())
        for g in s.scalars(select(Group).order_by(Group.name)):
            groups.append({"name": g.name, "users": members.get(g.id, 0), "accounts": accounts.get(g.id, 0),
                           "approves": g.name in approvers})
        rows = [{"row": u, "groups": sorted(u.group_names), "approver": bool(u.group_names & approvers)} for u in users]
    return render_template("users/index.html", users=rows, groups=groups, roles=ROLES)


@bp.get("/users/<id:user_id>")
@requires(*INVENTORY_READ)
def edit(user_id: int):
    with session_scope() as s:
        row = s.get(User, user_id)
        if row is None:
            abort(404)
        v = {"id": row.id, "email": row.email, "name": row.name, "roles": list(row.roles or []),
             "groups": ", ".join(sorted(row.group_names)), "active": row.active, "source": row.source,
             "local": bool(row.password_hash), "last_login_at": row.last_login_at}
    return render_template("users/edit.html", v=v, roles=ROLES, problems=[], password=None)


@bp.post("/users/<id:user_id>")
@requires(*ADMIN)
def save(user_id: int):
    roles = [r for r in request.form.getlist("roles") if r]
    groups = split_list(request.form.get("groups"))
    active = request.form.get("active") == "on"
    if user_id == current_user.uid and ("admin" not in roles or not active):
        flash("You cannot remove your own admin role or deactivate yourself.", "error")
        return redirect(url_for(".edit", user_id=user_id))
    try:
        with session_scope() as s:
            row = s.get(User, user_id)
            if row is None:
                abort(404)
            update_user(s, current_user.email, row, roles, groups, active)
    except ChangeError as exc:
        flash("Not saved: " + "; ".join(exc.problems), "error")
    else:
        flash("User saved.", "ok")
    return redirect(url_for(".edit", user_id=user_id))


@bp.post("/users/<id:user_id>/password")
@requires(*ADMIN)
def password(user_id: int):
    with session_scope() as s:
        row = s.get(User, user_id)
        if row is None:
            abort(404)
        if row.source == "oidc":
            flash("This user signs in through the identity provider.", "error")
            return redirect(url_for(".edit", user_id=user_id))
        new = reset_password(s, current_user.email, row)
        v = {"id": row.id, "email": row.email, "name": row.name, "roles": list(row.roles or []),
             "groups": ", ".join(sorted(row.group_names)), "active": row.active, "source": row.source,
             "local": True, "last_login_at": row.last_login_at}
    return render_template("users/edit.html", v=v, roles=ROLES, problems=[], password=new)


@bp.post("/users")
@requires(*ADMIN)
def create():
    email = request.form.get("email", "").strip()
    name = request.form.get("name", "").strip()
    roles = [r for r in request.form.getlist("roles") if r]
    groups = split_list(request.form.get("groups"))
    try:
        with session_scope() as s:
            new = create_local_user(s, current_user.email, email, name, roles, groups)
            row = user_by_email(s, email)
            v = {"id": row.id, "email": row.email, "name": row.name, "roles": list(row.roles or []),
                 "groups": ", ".join(sorted(row.group_names)), "active": True, "source": row.source,
                 "local": True, "last_login_at": None}
    except ChangeError as exc:
        flash("User not created: " + "; ".join(exc.problems), "error")
        return redirect(url_for(".index"))
    return render_template("users/edit.html", v=v, roles=ROLES, problems=[], password=new)

