"""A local account changes its own password (accounts from the IdP change it there)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user, login_user
from werkzeug.security import check_password_hash, generate_password_hash

from app import audit
from app.db import session_scope
from app.models import User
from app.portal.security import VIEW, portal_user, requires

bp = Blueprint("password", __name__)
MIN_LENGTH = 12


@bp.post("/account/password")
@requires(*VIEW)
def change():
    current = request.form.get("current", "")
    new = request.form.get("new", "")
    again = request.form.get("again", "")
    with session_scope() as s:
        row = s.get(User, current_user.uid)
        if row is None or row.source == "oidc" or not row.password_hash:
            flash("This account has no local password: it signs in with the identity provider.", "error")
            return redirect(url_for("auth.account"))
        if not check_password_hash(row.password_hash, current):
            audit.append(s, row.email, "user.password_change_refused", row.email, {"reason": "wrong current password"})
            flash("The current password is not right; nothing changed.", "error")
            return redirect(url_for("auth.account"))
        if len(new) < MIN_LENGTH or len(new) > 500:
            flash(f"The new password needs {MIN_LENGTH} to 500 characters.", "error")
            return redirect(url_for("auth.account"))
        if new != again:
            flash("The two new passwords differ; nothing changed.", "error")
            return redirect(url_for("auth.account"))
        row.password_hash = generate_password_hash(new)
        audit.append(s, row.email, "user.password_change", row.email, {})
        s.flush()
        # The new hash ends every other session of this account; this one signs in again.
        login_user(portal_user(s, row))
    flash("Your password was changed. Other sessions of this account are signed out.", "ok")
    return redirect(url_for("auth.account"))
