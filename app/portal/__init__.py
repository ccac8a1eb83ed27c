"""The web portal: reviewers, approvers, auditors and admins.

    app = create_app()          # Flask app factory; `run()` serves it with waitress

Server-rendered pages (Jinja, autoescaped) plus a JSON API under /api/v1. The portal
holds no decision logic: votes go to app.approvals, policy edits to app.inventory.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, render_template, request, send_from_directory
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.routing import IntegerConverter
from werkzeug.exceptions import NotFound

from app.paths import NODE_MODULES, TEMPLATES
from app.portal.config import PortalSettings, portal_settings
from app.portal.security import enforce_roles, init_login, principal

STATIC = Path(__file__).resolve().parent / "static"
# asciinema-player comes from npm (`make install` runs `npm ci`); never committed.
VENDOR = NODE_MODULES / "asciinema-player" / "dist" / "bundle"

csrf = CSRFProtect()

STORE_RETRY_AFTER = 5
STORE_DOWN_PAGE = ("<!doctype html><title>airlock: store unavailable</title>"
                   "<h1>The airlock store is unavailable</h1><p>Nothing could be read or saved. "
                   "Try again in a few seconds.</p>")


def _store_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, TimeoutError

    from app.db import StoreUnavailable

    # OperationalError covers a refused or lost connection, a statement or lock timeout
    # and SQLite's "database is locked"; TimeoutError is the pool waiting for a connection.
    return (OperationalError, InterfaceError, DisconnectionError, TimeoutError, StoreUnavailable)


STORE_ERRORS = _store_errors()


class IdConverter(IntegerConverter):
    """Row ids: a number beyond what the store can hold (INTEGER) is simply not found (404)."""

    def __init__(self, map, *args, **kwargs):
        super().__init__(map, max=2**31 - 1)


log = logging.getLogger(__name__)


def _session_secret() -> str:
    """Every portal process derives the same cookie key from the store's secret key."""
    from app import vault

    return hmac.new(vault.load_key(), b"airlock portal session v1", hashlib.sha256).hexdigest()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    cfg: PortalSettings = portal_settings()
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(STATIC), static_url_path="/static")
    app.config.update(
        SECRET_KEY=None,
        SESSION_COOKIE_NAME="airlock_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=cfg.secure_cookies,
        REMEMBER_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=cfg.session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session instead, which expires on its own
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        PORTAL=cfg,
    )
    if config:
        app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _session_secret()
    # Flask 3 dropped JSON_SORT_KEYS: the provider's attribute is the setting now. The API
    # answers keep the order the view built (ids and names first), as they always meant to.
    app.json.sort_keys = False
    app.jinja_env.autoescape = True  # also for any non-.html template we might add
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True

    app.url_map.converters["id"] = IdConverter
    csrf.init_app(app)
    init_login(app)
    from app.portal import filters

    filters.register(app)
    _register_blueprints(app)
    app.before_request(enforce_roles)
    app.after_request(_security_headers)
    _register_errors(app)

    @app.get("/vendor/asciinema/<path:name>")
    def vendor(name: str):
        return send_from_directory(VENDOR, name, max_age=86400)

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.context_processor
    def inject() -> dict[str, Any]:
        return {"me": principal(), "portal": app.config["PORTAL"], "pending_badge": _pending_badge}

    return app


def _pending_badge() -> int:
    """The navigation badge: reviews the viewer may vote on and has not."""
    from flask_login import current_user

    from app.db import session_scope
    from app.portal.queue import needs_me_count

    with session_scope() as s:
        return needs_me_count(s, current_user.email)


def _register_blueprints(app: Flask) -> None:
    from app.portal import (access_requests_views, api, audit_views, auth, campaigns_views, dashboard, grants_views,
                            inventory_views, password_views, policy_views, reviews, sessions_views, site_views,
                            slack_views, users_views)

    for module in (auth, dashboard, reviews, sessions_views, audit_views, policy_views, inventory_views,
                   grants_views, users_views, slack_views, campaigns_views, access_requests_views, site_views,
                   password_views):
        app.register_blueprint(module.bp)
    app.register_blueprint(api.bp)
    csrf.exempt(api.bp)  # Bearer tokens only; the API never reads the session cookie
    # Slack signs these requests itself (checked on the raw body); the link page keeps CSRF.
    csrf.exempt(slack_views.actions_endpoint)
    csrf.exempt(slack_views.commands_endpoint)
    auth.init_oidc(app)


def _security_headers(resp):
    # Recorded content is escaped by Jinja; this CSP is the second wall: no inline
    # script, nothing from elsewhere. The player needs WebAssembly and inline styles.
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'",
    )
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint not in ("static", "vendor", "site.swagger_asset", "site.favicon"):
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def _register_errors(app: Flask) -> None:
    def wants_json() -> bool:
        return request.blueprint == "api" or request.path.startswith("/api/")

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        if wants_json():
            return {"error": "csrf", "message": exc.description}, 400
        return render_template("error.html", code=400, title="Form expired or forged",
                               message="This form was missing its security token. Go back, reload the page and try again."), 400

    for code, title in ((400, "Bad request"), (403, "Not allowed"), (404, "Not found"), (405, "Method not allowed"),
                        (413, "Too large"), (500, "Something went wrong")):
        def handler(exc, code=code, title=title):
            if wants_json():
                return {"error": title.lower().replace(" ", "_"), "message": getattr(exc, "description", title)}, code
            msg = getattr(exc, "description", "") if code != 500 else "The error was logged. Try again in a moment."
            if code == 403:
                msg = "Your roles do not include this page or action."
            if code == 404 and (not msg or msg == NotFound.description):
                msg = f"There is nothing at {request.path}. It may have been removed, or the link is mistyped."
            return render_template("error.html", code=code, title=title, message=msg), code

        app.register_error_handler(code, handler)

    def store_unavailable(exc):
        # A store outage is not a bug of ours: say so (503, retry), and render nothing
        # that would need the store again (no layout, no user, no badge).
        log.warning("store unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
        headers = {"Retry-After": str(STORE_RETRY_AFTER)}
        if wants_json():
            return {"error": "store_unavailable",
                    "message": "the airlock store is unavailable; try again shortly",
                    "retry_after": STORE_RETRY_AFTER}, 503, headers
        return (STORE_DOWN_PAGE, 503, {**headers, "Content-Type": "text/html; charset=utf-8"})

    for exc_type in STORE_ERRORS:
        app.register_error_handler(exc_type, store_unavailable)


def run() -> None:
    """`airlock portal`: serve with waitress (a production WSGI server) on the portal port."""
    from waitress import serve

    from app.config import settings

    cfg = settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s portal %(levelname)s %(message)s")
    app = create_app()
    log.info("airlock portal on http://%s:%d (public URL %s)", cfg.bind, cfg.portal_port, cfg.public_url)
    serve(app, host=cfg.bind, port=cfg.portal_port, threads=portal_settings().threads, ident="airlock",
          clear_untrusted_proxy_headers=True)
