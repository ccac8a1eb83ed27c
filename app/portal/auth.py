"""Sign in (local accounts and OIDC with PKCE), sign out, and the user's own API token."""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from authlib.integrations.flask_client import OAuth, OAuthError
from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from app import audit
from app.db import session_scope
from app.models import Group, User, user_by_email, utcnow
from app.portal.security import VIEW, new_api_token, portal_user, requires

bp = Blueprint("auth", __name__)
oauth = OAuth()

# Spend the same time whether or not the account exists, so timing tells nothing.
_DUMMY_HASH = generate_password_hash("airlock-timing-equaliser")
MAX_FAILURES, FAILURE_WINDOW = 5, 300.0


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=500)])


class _Throttle:
    """Per-process brake on password guessing: N failures per account per window."""

    def __init__(self) -> None:
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, key: str) -> bool:
        with self._lock:
            q = self._fails[key]
            while q and time.monotonic() - q[0] > FAILURE_WINDOW:
                q.popleft()
            return len(q) >= MAX_FAILURES

    def fail(self, key: str) -> None:
        with self._lock:
            self._fails[key].append(time.monotonic())

    def clear(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


throttle = _Throttle()


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.index")


def _start_session(user) -> None:
    session.clear()  # no fixation: a fresh session, fresh CSRF token
    session.permanent = True
    login_user(user)


@bp.route("/login", methods=["GET", "POST"])
def login():
    cfg = current_app.config["PORTAL"]
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    error = None
    if request.method == "POST" and not cfg.local_login:
        error = "Local sign-in is turned off; use single sign-on."
    elif form.validate_on_submit():
        email = form.email.data.strip().lower()
        if throttle.blocked(email):
            error = "Too many failed attempts. Wait a few minutes and try again."
        else:
            user, error = _check_password(email, form.password.data)
            if user is not None:
                throttle.clear(email)
                _start_session(user)
                return redirect(_safe_next(request.args.get("next")))
            throttle.fail(email)
    elif request.method == "POST":
        error = "Enter your email and password."
    return render_template("login.html", form=form, error=error, oidc=cfg.oidc_enabled, local=cfg.local_login,
                           next=request.args.get("next", "")), (401 if error else 200)


def _check_password(email: str, password: str):
    with session_scope() as s:
        row = user_by_email(s, email)
        ok = check_password_hash(row.password_hash if row and row.password_hash else _DUMMY_HASH, password)
        if row is None or not row.password_hash or not ok or not row.active:
            audit.append(s, email[:320], "user.login_failed", email[:320], {"method": "local"})
            return None, "That email and password do not match an active account."
        row.last_login_at = utcnow()
        audit.append(s, row.email, "user.login", row.email, {"method": "local"})
        return portal_user(s, row), None


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        with session_scope() as s:
            audit.append(s, current_user.email, "user.logout", current_user.email, {})
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


# -- OIDC ------------------------------------------------------------------------------

def init_oidc(app) -> None:
    cfg = app.config["PORTAL"]
    oauth.init_app(app)
    if cfg.oidc_enabled:
        oauth.register(
            "idp",
            client_id=cfg.oidc_client_id,
            client_secret=cfg.oidc_client_secret or None,
            server_metadata_url=cfg.oidc_issuer + "/.well-known/openid-configuration",
            # authlib adds code_challenge/code_verifier (PKCE, S256) with this setting.
            client_kwargs={"scope": cfg.oidc_scopes, "code_challenge_method": "S256",
                           "token_endpoint_auth_method": "client_secret_post" if cfg.oidc_client_secret else "none"},
            overwrite=True,
        )


def _client():
    client = oauth.create_client("idp")
    if client is None:
        from flask import abort

        abort(404)
    return client


@bp.get("/login/oidc")
def oidc_start():
    session["oidc_next"] = _safe_next(request.args.get("next"))
    return _client().authorize_redirect(url_for("auth.oidc_callback", _external=True))


@bp.get("/auth/callback")
def oidc_callback():
    client = _client()
    try:
        token = client.authorize_access_token()
        claims = dict(token.get("userinfo") or {})
        if not claims:
            claims = dict(client.userinfo(token=token))
    except (OAuthError, ValueError, KeyError) as exc:
        current_app.logger.warning("OIDC sign-in failed: %s", exc)
        return render_template("login.html", form=LoginForm(), error="Single sign-on failed. Try again.",
                               oidc=True, local=current_app.config["PORTAL"].local_login, next=""), 401
    user, error = _oidc_user(claims)
    if user is None:
        return render_template("login.html", form=LoginForm(), error=error, oidc=True,
                               local=current_app.config["PORTAL"].local_login, next=""), 403
    nxt = session.get("oidc_next")
    _start_session(user)
    return redirect(_safe_next(nxt))


def _claim_groups(claims: dict, name: str) -> list[str]:
    value = claims
    for part in name.split("."):  # nested claims, e.g. realm_access.roles
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return sorted({str(v)[:200] for v in value if isinstance(v, (str, int)) and str(v).strip()})


def _oidc_user(claims: dict):
    cfg = current_app.config["PORTAL"]
    sub = str(claims.get("sub") or "")
    email = str(claims.get("email") or "").strip().lower()
    if not sub or not email or "@" not in email:
        return None, "Your identity provider did not send an email address."
    if claims.get("email_verified") is False:
        return None, "Your email address is not verified at the identity provider."
    groups = _claim_groups(claims, cfg.oidc_groups_claim)
    mapped = {role for role, names in (("admin", cfg.admin_groups), ("auditor", cfg.auditor_groups),
                                         ("approver", cfg.approver_groups)) if set(names) & set(groups)}
    with session_scope() as s:
        row = user_by_email(s, email)
        if row is not None and row.oidc_subject and row.oidc_subject != sub:
            audit.append(s, email, "user.login_failed", email, {"method": "oidc", "reason": "subject mismatch"})
            return None, "This account is linked to a different identity at the provider."
        if row is None:
            row = User(email=email, name=str(claims.get("name") or "")[:200], roles=[], source="oidc", active=True)
            s.add(row)
        if not row.active:
            audit.append(s, email, "user.login_failed", email, {"method": "oidc", "reason": "inactive"})
            return None, "This account is deactivated."
        row.oidc_subject = sub
        if row.source == "oidc":
            # The IdP is the source of truth for its own users' groups and roles.
            row.roles = sorted(mapped)
            row.groups = _groups(s, groups)
            if claims.get("name"):
                row.name = str(claims["name"])[:200]
        row.last_login_at = utcnow()
        s.flush()
        audit.append(s, email, "user.login", email, {"method": "oidc", "groups": groups})
        return portal_user(s, row), None


def _groups(s, names: list[str]) -> list[Group]:
    from sqlalchemy import select

    existing = {g.name: g for g in s.scalars(select(Group).where(Group.name.in_(names)))} if names else {}
    out = []
    for name in names:
        if name not in existing:
            existing[name] = Group(name=name)
            s.add(existing[name])
        out.append(existing[name])
    return out


# -- the user's own account ------------------------------------------------------------

@bp.get("/account")
@requires(*VIEW)
def account():
    with session_scope() as s:
        row = s.get(User, current_user.uid)
        has_token = bool(row and row.api_token_hash)
    return render_template("account.html", has_token=has_token, new_token=None)


@bp.post("/account/api-token")
@requires(*VIEW)
def api_token():
    revoke = request.form.get("action") == "revoke"
    token = None
    with session_scope() as s:
        row = s.get(User, current_user.uid)
        if revoke:
            row.api_token_hash = None
            audit.append(s, row.email, "user.api_token_revoke", row.email, {})
        else:
            token, digest = new_api_token()
            row.api_token_hash = digest
            audit.append(s, row.email, "user.api_token_issue", row.email, {})
    if revoke:
        flash("Your API token was revoked.", "ok")
        return redirect(url_for("auth.account"))
    return render_template("account.html", has_token=True, new_token=token)
