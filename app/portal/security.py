"""Who is asking, and may they: portal users, roles, API tokens, and deny-by-default.

Every view declares the roles it needs with `@requires(...)`. A `before_request` hook
refuses any endpoint that declares nothing (unless it is listed as public), so a page
added without a role check fails closed instead of opening up.

Roles: admin, approver, auditor. "approver" is also given by membership of any group
that a review rule names as approvers (DESIGN §4: approvers come through groups).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from functools import wraps
from typing import Callable, Iterable

from flask import abort, current_app, g, jsonify, request
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user
from sqlalchemy import select

from app import approvals
from app.approvals.approvers import ROLES
from app.db import session_scope
from app.models import User

API_TOKEN_PREFIX = "alu_"
PUBLIC_ENDPOINTS = {"static", "vendor", "auth.login", "auth.oidc_start", "auth.oidc_callback", "auth.logout",
                    "api.openapi", "healthz", "site.swagger_asset", "site.favicon",
                    # Slack signs these requests; app.portal.slack_views checks each signature.
                    "slack.actions_endpoint", "slack.commands_endpoint"}

# What each capability needs. Kept in one table so pages, API and templates agree.
VIEW = ("admin", "approver", "auditor")
VOTE = ("admin", "approver")
AUDIT = ("admin", "auditor")
INVENTORY_READ = ("admin", "auditor")
ADMIN = ("admin",)


@dataclass(frozen=True)
class PortalUser(UserMixin):
    """A detached picture of a User row: safe to keep for the whole request."""

    uid: int
    email: str
    name: str
    roles: frozenset[str]
    groups: frozenset[str] = field(default_factory=frozenset)
    stamp: str = ""
    source: str = "portal"

    def get_id(self) -> str:
        # The stamp changes with the password or the account state, so old cookies die.
        return f"{self.uid}:{self.stamp}"

    def can(self, allowed: Iterable[str]) -> bool:
        return bool(self.roles & set(allowed))

    @property
    def display(self) -> str:
        return self.name or self.email


class Anonymous(AnonymousUserMixin):
    roles: frozenset[str] = frozenset()
    email = ""

    def can(self, allowed: Iterable[str]) -> bool:
        return False


def user_stamp(user: User) -> str:
    basis = f"{user.id}|{user.password_hash or ''}|{user.oidc_subject or ''}|{user.active}"
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def approver_groups(session) -> frozenset[str]:
    """Groups named as approvers by any review rule (app.approvals decides; cached per version)."""
    return approvals.approver_groups(session)


def portal_user(session, user: User) -> PortalUser:
    groups = frozenset(user.group_names)
    roles = approvals.roles_of(user.roles or [], groups, approvals.approver_groups(session))
    return PortalUser(uid=user.id, email=user.email, name=user.name or "", roles=roles,
                      groups=groups, stamp=user_stamp(user), source=user.source)


def load_user(user_id: str) -> PortalUser | None:
    uid, _, stamp = user_id.partition(":")
    if not uid.isdigit() or len(uid) > 18:
        return None
    with session_scope() as s:
        row = s.get(User, int(uid))
        if row is None or not row.active or not hmac.compare_digest(user_stamp(row), stamp):
            return None
        return portal_user(s, row)


def init_login(app) -> LoginManager:
    lm = LoginManager()
    lm.login_view = "auth.login"
    lm.login_message = "Please sign in to continue."
    lm.login_message_category = "info"
    lm.session_protection = "strong"
    lm.anonymous_user = Anonymous
    lm.user_loader(load_user)
    lm.init_app(app)
    return lm


# -- API tokens of portal users --------------------------------------------------------

def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token() -> tuple[str, str]:
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_api_token(token)


def api_user_from_header() -> PortalUser | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(API_TOKEN_PREFIX) or len(token) > 200:
        return None
    with session_scope() as s:
        row = s.scalars(select(User).where(User.api_token_hash == hash_api_token(token))).first()
        if row is None or not row.active:
            return None
        return portal_user(s, row)


def principal() -> PortalUser | Anonymous:
    """The caller: the API token's user inside /api, the logged-in user elsewhere."""
    if request.blueprint == "api":
        if "api_user" not in g:  # app-level hooks run before the blueprint's: resolve here
            g.api_user = api_user_from_header()
        return g.api_user or Anonymous()
    return current_user  # type: ignore[return-value]


# -- deny by default -------------------------------------------------------------------

def requires(*roles: str) -> Callable:
    """Declare the roles (any of) a view needs. Checked by `enforce_roles`."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"bad roles {roles!r}")

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            return view(*args, **kwargs)

        wrapper.required_roles = frozenset(roles)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def enforce_roles():
    """before_request: every endpoint is public by name, or declares roles that we check."""
    endpoint = request.endpoint
    if endpoint is None or endpoint in PUBLIC_ENDPOINTS:
        return None
    view = current_app.view_functions.get(endpoint)
    required = getattr(view, "required_roles", None)
    is_api = request.blueprint == "api"
    if required is None:
        current_app.logger.error("endpoint %s declares no roles; refusing", endpoint)
        abort(403)
    who = principal()
    if not getattr(who, "is_authenticated", False):
        if is_api:
            resp = jsonify(error="unauthorized", message="send a portal API token as 'Authorization: Bearer alu_...'")
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="airlock"'
            return resp
        return current_app.login_manager.unauthorized()
    if not who.can(required):
        if is_api:
            return jsonify(error="forbidden", message=f"needs one of the roles: {', '.join(sorted(required))}"), 403
        abort(403)
    return None


def endpoint_roles(app) -> dict[str, frozenset[str] | None]:
    """endpoint -> declared roles (None when public); used by tests to prove coverage."""
    out: dict[str, frozenset[str] | None] = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        out[rule.endpoint] = None if rule.endpoint in PUBLIC_ENDPOINTS else getattr(view, "required_roles", None)
    return out
