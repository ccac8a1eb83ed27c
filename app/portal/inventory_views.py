"""Connections (credentials write-only) and service accounts with their airlock tokens."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from app.db import session_scope
from app.identity import list_tokens
from app.inventory import secret_placeholders
from app.models import Connection, Grant, ServiceAccount
from app.policy import parse_duration
from app.changes import ChangeError, edit, issue_sa_token, replace_item, revoke_sa_token
from app.portal.security import ADMIN, INVENTORY_READ, requires

bp = Blueprint("inventory", __name__)
TYPES = ("http", "postgres", "mysql", "ssh")
PLAIN_KEYS = {"http": ("hosts",), "postgres": ("address", "database", "username"),
              "mysql": ("address", "database", "username"), "ssh": ("address", "username", "host_key")}
SECRET_KEYS = {"http": (), "postgres": ("password",), "mysql": ("password",), "ssh": ("private_key", "password")}
TTL_CHOICES = ("1h", "8h", "1d", "7d", "30d", "90d", "365d")


def split_list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").replace("\n", ",").split(",") if x.strip()]


# -- connections -----------------------------------------------------------------------

@bp.get("/connections")
@requires(*INVENTORY_READ)
def connections():
    with session_scope() as s:
        rows = s.scalars(select(Connection).order_by(Connection.name)).all()
        grants = dict(s.execute(select(Grant.connection_id, func.count(Grant.id))
                                .where(Grant.revoked_at.is_(None)).group_by(Grant.connection_id)).all())
        places = secret_placeholders(s)
    return render_template("inventory/connections.html", rows=rows, grants=grants, places=places)


def _connection_form(name: str | None, problems: list[str] | None = None, form: dict | None = None, status: int = 200):
    with session_scope() as s:
        row = s.scalars(select(Connection).where(Connection.name == name)).first() if name else None
        if name and row is None:
            abort(404)
        stored = sorted(secret_placeholders(s).get(name, {})) if name else []
        values: dict[str, Any] = {"type": "postgres"}
        if row is not None:
            values = {**(row.config or {}), "name": row.name, "type": row.type, "owner": row.owner}
            values["hosts"] = ", ".join(values.get("hosts") or [])
    if form:
        values.update(form)
    return render_template("inventory/connection_form.html", original=name, v=values, stored=stored, types=TYPES,
                           plain_keys=PLAIN_KEYS, secret_keys=SECRET_KEYS, problems=problems or []), status


@bp.get("/connections/new")
@requires(*ADMIN)
def new_connection():
    return _connection_form(None)


@bp.get("/connections/<name>")
@requires(*INVENTORY_READ)
def connection(name: str):
    return _connection_form(name)


@bp.post("/connections")
@requires(*ADMIN)
def save_connection():
    f = request.form
    original = f.get("original") or None
    kind = f.get("type", "")
    if kind not in TYPES:
        return _connection_form(original, ["choose a connection type"], dict(f), 400)
    entry: dict[str, Any] = {"name": f.get("name", "").strip(), "type": kind}
    for key in ("owner", "description"):
        if f.get(key, "").strip():
            entry[key] = f.get(key).strip()
    if f.get("default", "allow") != "allow":
        entry["default"] = f.get("default")  # validated with the rest of the file
    for key in PLAIN_KEYS[kind]:
        value = split_list(f.get(key)) if key == "hosts" else f.get(key, "").strip()
        if value:
            entry[key] = value
    new_secrets: dict[str, str] = {}
    with session_scope() as s:
        current = secret_placeholders(s).get(original or "", {})

    def secret(stored_key: str, typed: str, clear: bool) -> str | None:
        """A new value if typed, else the stored one (by placeholder), else nothing."""
        if typed:
            var = f"AIRLOCK_PORTAL_NEW_{len(new_secrets) + 1}"
            new_secrets[var] = typed
            return "${env:" + var + "}"
        if stored_key in current and not clear:
            return "${env:" + current[stored_key] + "}"
        return None

    for key in SECRET_KEYS[kind]:
        value = secret(key, f.get(key, ""), f.get(f"clear_{key}") == "on")
        if value:
            entry[key] = value
    if kind == "http":
        headers: dict[str, str] = {}
        for stored_key in current:
            if stored_key.startswith("header:"):
                hname = stored_key[7:]
                value = secret(stored_key, f.get(f"header_value:{hname}", ""), f.get(f"clear_header:{hname}") == "on")
                if value:
                    headers[hname] = value
        new_name, new_value = f.get("new_header_name", "").strip(), f.get("new_header_value", "")
        if new_name and new_value:
            headers[new_name] = secret("", new_value, False) or ""
        if headers:
            entry["inject"] = {"headers": headers}
    try:
        with session_scope() as s:
            report = edit(s, current_user.email, lambda d: replace_item(d, "connections", "name", original, entry),
                          new_secrets=new_secrets)
    except ChangeError as exc:
        form = {k: v for k, v in f.items() if k not in ("password", "private_key") and not k.startswith("header_value")}
        return _connection_form(original, exc.problems, form, 400)
    flash(f"Connection {entry['name']} saved ({report.summary()}).", "ok")
    return redirect(url_for(".connections"))


@bp.post("/connections/<name>/delete")
@requires(*ADMIN)
def delete_connection(name: str):
    try:
        with session_scope() as s:
            edit(s, current_user.email, lambda d: _drop_connection(d, name))
    except ChangeError as exc:
        flash("Not deleted: " + "; ".join(exc.problems), "error")
        return redirect(url_for(".connection", name=name))
    flash(f"Connection {name} deleted, with its grants.", "ok")
    return redirect(url_for(".connections"))


def _drop_connection(data: dict, name: str) -> None:
    replace_item(data, "connections", "name", name, None)
    data["grants"] = [g for g in data.get("grants") or [] if g.get("connection") != name]


# -- service accounts ------------------------------------------------------------------

@bp.get("/service-accounts")
@requires(*INVENTORY_READ)
def service_accounts():
    with session_scope() as s:
        rows = s.scalars(select(ServiceAccount).order_by(ServiceAccount.disabled, ServiceAccount.name)).all()
        grants = dict(s.execute(select(Grant.service_account_id, func.count(Grant.id))
                                .where(Grant.revoked_at.is_(None)).group_by(Grant.service_account_id)).all())
        accounts = [{"row": r, "groups": sorted(r.group_names), "grants": grants.get(r.id, 0),
                     "tokens": sum(1 for t in list_tokens(s, r.name) if t.status() == "active")} for r in rows]
    return render_template("inventory/service_accounts.html", accounts=accounts)


def _sa_page(name: str | None, problems=None, form=None, new_token=None, status: int = 200):
    tokens = []
    with session_scope() as s:
        row = s.scalars(select(ServiceAccount).where(ServiceAccount.name == name)).first() if name else None
        if name and row is None:
            abort(404)
        v: dict[str, Any] = {}
        if row is not None:
            v = {"name": row.name, "description": row.description, "groups": ", ".join(sorted(row.group_names)),
                 "oidc_issuer": row.oidc_issuer or "", "oidc_subject": row.oidc_subject or "",
                 "groups_claim": row.groups_claim or "", "public_keys": "\n".join(row.public_keys or []),
                 "disabled": row.disabled}
            tokens = list_tokens(s, row.name)
    v.update(form or {})
    return render_template("inventory/service_account.html", original=name, v=v, tokens=tokens, problems=problems or [],
                           ttls=TTL_CHOICES, new_token=new_token), status


@bp.get("/service-accounts/new")
@requires(*ADMIN)
def new_service_account():
    return _sa_page(None)


@bp.get("/service-accounts/<name>")
@requires(*INVENTORY_READ)
def service_account(name: str):
    return _sa_page(name)


@bp.post("/service-accounts")
@requires(*ADMIN)
def save_service_account():
    f = request.form
    original = f.get("original") or None
    entry: dict[str, Any] = {"name": f.get("name", "").strip()}
    if f.get("description", "").strip():
        entry["description"] = f.get("description").strip()
    if split_list(f.get("groups")):
        entry["groups"] = split_list(f.get("groups"))
    if f.get("oidc_issuer", "").strip() or f.get("oidc_subject", "").strip():
        entry["oidc"] = {"issuer": f.get("oidc_issuer", "").strip(), "subject": f.get("oidc_subject", "").strip()}
        if f.get("groups_claim", "").strip():
            entry["oidc"]["groups_claim"] = f.get("groups_claim").strip()
    keys = [k.strip() for k in f.get("public_keys", "").splitlines() if k.strip()]
    if keys:
        entry["public_keys"] = keys
    try:
        with session_scope() as s:
            report = edit(s, current_user.email,
                          lambda d: replace_item(d, "service_accounts", "name", original, entry))
    except ChangeError as exc:
        return _sa_page(original, exc.problems, dict(f), status=400)
    flash(f"Service account {entry['name']} saved ({report.summary()}).", "ok")
    return redirect(url_for(".service_account", name=entry["name"]))


@bp.post("/service-accounts/<name>/disable")
@requires(*ADMIN)
def disable_service_account(name: str):
    def mutate(data):
        replace_item(data, "service_accounts", "name", name, None)
        data["grants"] = [g for g in data.get("grants") or [] if g.get("service_account") != name]

    try:
        with session_scope() as s:
            edit(s, current_user.email, mutate)
    except ChangeError as exc:
        flash("Not disabled: " + "; ".join(exc.problems), "error")
    else:
        flash(f"Service account {name} disabled; its sessions and audit history stay.", "ok")
    return redirect(url_for(".service_accounts"))


@bp.post("/service-accounts/<name>/tokens")
@requires(*ADMIN)
def issue(name: str):
    ttl_text = request.form.get("ttl", "1d")
    description = request.form.get("description", "").strip()[:300]
    try:
        ttl = timedelta(seconds=parse_duration(ttl_text))
        with session_scope() as s:
            issued = issue_sa_token(s, current_user.email, name, ttl, description)
    except (ValueError, LookupError, TypeError) as exc:
        return _sa_page(name, [str(exc).strip("'\"")], status=400)
    return _sa_page(name, new_token=issued)


@bp.post("/service-accounts/<name>/tokens/<id:token_id>/revoke")
@requires(*ADMIN)
def revoke(name: str, token_id: int):
    try:
        with session_scope() as s:
            revoke_sa_token(s, current_user.email, token_id)
    except ChangeError as exc:
        flash("; ".join(exc.problems), "error")
    else:
        flash(f"Token {token_id} revoked; it stops working within a second.", "ok")
    return redirect(url_for(".service_account", name=name))
