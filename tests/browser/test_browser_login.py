"""Signing in: local accounts, and OIDC (authorization code + PKCE) against a local issuer."""
from __future__ import annotations

import base64
import hashlib
import io
import threading
from urllib.parse import parse_qs

import pytest
import werkzeug.serving
from oidc_provider_mock import User as IdPUser, app as idp_app
from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry, User
from tests.browser.conftest import LiveServer, login


def test_local_login_wrong_password_then_right_then_logout(page):
    page.goto("/reviews")
    assert "/login" in page.url
    page.fill("#email", "alice@example.com")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert "do not match" in page.inner_text("[role=alert]")
    login(page, "alice@example.com")
    assert "Alice Chen" in page.inner_text("nav .who")
    cookie = next(c for c in page.context.cookies() if c["name"] == "airlock_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.click("nav .who button")
    page.wait_for_url("**/login")
    page.goto("/reviews")
    assert "/login" in page.url
    with session_scope() as s:
        actions = [e.action for e in s.scalars(select(AuditEntry).where(AuditEntry.target == "alice@example.com"))]
    assert actions == ["user.login_failed", "user.login", "user.logout"]


class PKCECheck:
    """Wraps the mock issuer: records the code challenge and refuses a token request whose
    verifier does not match it (the mock itself does not check PKCE)."""

    def __init__(self, app) -> None:
        self.app = app
        self.challenges: list[tuple[str, str]] = []
        self.verified = 0

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.endswith("/oauth2/authorize") and environ["REQUEST_METHOD"] == "GET":
            q = parse_qs(environ.get("QUERY_STRING", ""))
            self.challenges.append((q.get("code_challenge", [""])[0], q.get("code_challenge_method", [""])[0]))
        if path.endswith("/oauth2/token"):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            verifier = parse_qs(body.decode()).get("code_verifier", [""])[0]
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not verifier or (digest, "S256") not in self.challenges:
                start_response("400 Bad Request", [("Content-Type", "application/json")])
                return [b'{"error": "invalid_grant", "error_description": "PKCE verification failed"}']
            self.verified += 1
        return self.app(environ, start_response)


@pytest.fixture
def idp():
    users = [IdPUser(sub="erin-sub", claims={"email": "erin@example.com", "name": "Erin Example",
                                             "groups": ["dba", "airlock-auditors"]})]
    wrapped = PKCECheck(idp_app(user_claims=users))
    server = werkzeug.serving.make_server("localhost", 0, wrapped, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    wrapped.issuer = f"http://localhost:{server.server_port}"
    yield wrapped
    server.shutdown()
    thread.join(5)


@pytest.fixture
def oidc_live(scenario, idp, monkeypatch):
    from app.portal import create_app

    monkeypatch.setenv("AIRLOCK_PORTAL_OIDC_ISSUER", idp.issuer)
    monkeypatch.setenv("AIRLOCK_PORTAL_OIDC_CLIENT_ID", "airlock-portal")
    monkeypatch.setenv("AIRLOCK_PORTAL_OIDC_CLIENT_SECRET", "portal-secret")
    monkeypatch.setenv("AIRLOCK_PORTAL_OIDC_GROUPS_CLAIM", "groups")
    server = LiveServer(create_app()).start()
    yield server
    server.stop()


def test_oidc_login_with_pkce_maps_groups_to_roles(browser, oidc_live, idp):
    context = browser.new_context(base_url=oidc_live.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto("/sessions")
        page.click("#sso")
        # The issuer's consent page: pick the predefined identity.
        page.click("button[value='erin-sub']")
        page.wait_for_selector("nav.side")
        assert "/sessions" in page.url
        who = page.inner_text("nav .who")
        assert "Erin Example" in who and "auditor" in who and "approver" in who
    finally:
        context.close()
    assert idp.challenges and idp.challenges[-1][1] == "S256" and idp.verified == 1
    with session_scope() as s:
        user = s.scalars(select(User).where(User.email == "erin@example.com")).one()
        assert user.source == "oidc" and user.oidc_subject == "erin-sub"
        assert user.roles == ["auditor"] and user.group_names == {"dba", "airlock-auditors"}
        assert s.scalars(select(AuditEntry).where(AuditEntry.action == "user.login",
                                                  AuditEntry.target == "erin@example.com")).one().data["method"] == "oidc"
