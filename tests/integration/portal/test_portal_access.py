"""Sign-in, roles on every page, CSRF, cookies and headers (Flask test client, both stores)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry, Review
from app.portal.security import PUBLIC_ENDPOINTS, endpoint_roles
from tests.integration.portal.held import decide, sql_op

PAGES = {
    # path: who may GET it (admin always may)
    "/": {"approver", "auditor"},
    "/reviews": {"approver", "auditor"},
    "/sessions": {"approver", "auditor"},
    "/audit": {"auditor"},
    "/policy": {"auditor"},
    "/policy/yaml": {"auditor"},
    "/connections": {"auditor"},
    "/service-accounts": {"auditor"},
    "/grants": {"auditor"},
    "/users": {"auditor"},
    "/policy/rules/new": set(),
    "/connections/new": set(),
    "/service-accounts/new": set(),
}
PEOPLE = {"admin": "admin@example.com", "approver": "bob@example.com", "auditor": "carol@example.com"}


def test_every_endpoint_is_public_by_name_or_declares_roles(app):
    roles = endpoint_roles(app)
    undeclared = [ep for ep, r in roles.items() if r is None and ep not in PUBLIC_ENDPOINTS]
    assert undeclared == []
    assert roles["reviews.vote"] == {"admin", "approver"}
    assert roles["policy.save_rule"] == {"admin"}
    assert roles["audit.index"] == {"admin", "auditor"}


@pytest.mark.parametrize("role", ["admin", "approver", "auditor"])
def test_role_matrix_for_pages(browser_for, role):
    b = browser_for(PEOPLE[role])
    for path, allowed in PAGES.items():
        status = b.get(path).status_code
        expected = 200 if role == "admin" or role in allowed else 403
        assert status == expected, (role, path, status)


def test_anonymous_is_sent_to_login_and_api_gets_401(browser_for):
    b = browser_for()
    for path in PAGES:
        resp = b.get(path)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"], path
    resp = b.get("/api/v1/reviews")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_undeclared_view_fails_closed(scenario):
    from app.portal import create_app

    app = create_app({"TESTING": True})

    @app.get("/forgot-to-declare")
    def forgot():  # no @requires: must not be reachable even for admins
        return "secret"

    from tests.integration.portal.conftest import Browser

    b = Browser(app)
    b.login("admin@example.com")
    assert b.get("/forgot-to-declare").status_code == 403


def test_wrong_password_and_inactive_accounts_are_refused_and_audited(browser_for):
    b = browser_for()
    assert b.login("alice@example.com", "nope").status_code == 401
    assert b.login("nobody@example.com", "nope").status_code == 401
    with session_scope() as s:
        failed = s.scalars(select(AuditEntry.target).where(AuditEntry.action == "user.login_failed")).all()
    assert failed == ["alice@example.com", "nobody@example.com"]


def test_password_guessing_is_throttled(browser_for):
    b = browser_for()
    for _ in range(5):
        b.login("dave@example.com", "guess")
    from tests.integration.portal.scenario import PASSWORD

    resp = b.login("dave@example.com", PASSWORD)  # right password, but too late
    assert resp.status_code == 401 and "Too many failed attempts" in resp.get_data(as_text=True)
    from app.portal.auth import throttle

    throttle.clear("dave@example.com")


def test_post_without_csrf_token_is_refused(browser_for):
    verdict = decide(sql_op("UPDATE invoices SET a = 1 WHERE id = 2"), hold=0)
    b = browser_for("alice@example.com")
    resp = b.post(f"/reviews/{verdict.review_id}/vote", {"action": "approve"}, csrf=False)
    assert resp.status_code == 400 and "security token" in resp.get_data(as_text=True)
    resp = b.post(f"/reviews/{verdict.review_id}/vote", {"action": "approve", "csrf_token": "forged"}, csrf=False)
    assert resp.status_code == 400
    with session_scope() as s:
        assert s.get(Review, verdict.review_id).status == "pending"
    # The same request with the page's token goes through: the refusal was the token.
    resp = b.post(f"/reviews/{verdict.review_id}/vote", {"action": "approve"})
    assert resp.status_code == 302
    with session_scope() as s:
        assert s.get(Review, verdict.review_id).status == "approved"


def test_login_form_itself_needs_csrf(browser_for):
    b = browser_for()
    from tests.integration.portal.scenario import PASSWORD

    resp = b.client.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    assert resp.status_code == 400


def test_cookie_and_security_headers(browser_for):
    b = browser_for()
    page = b.get("/login")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    resp = b.login("alice@example.com")
    cookie = resp.headers.get("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "airlock_session=" in cookie


def test_secure_cookies_follow_an_https_public_url(scenario, monkeypatch):
    from app.config import settings
    from app.portal import create_app
    from tests.integration.portal.conftest import Browser

    monkeypatch.setenv("AIRLOCK_PUBLIC_URL", "https://airlock.example.com")
    settings.cache_clear()
    b = Browser(create_app({"TESTING": True}))
    resp = b.login("alice@example.com")
    assert "Secure" in resp.headers.get("Set-Cookie")


def test_logout_needs_post_and_ends_the_session(browser_for):
    b = browser_for("alice@example.com")
    assert b.get("/logout").status_code == 405
    assert b.post("/logout").status_code == 302
    assert b.get("/").status_code == 302


def test_api_token_shown_once_and_works_for_the_api(browser_for):
    b = browser_for("carol@example.com")
    html = b.post("/account/api-token", {"action": "issue"}).get_data(as_text=True)
    import re

    token = re.search(r'id="new-token">(alu_[^<]+)<', html).group(1)
    assert token not in b.get("/account").get_data(as_text=True)
    api = b.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200 and api.get_json()["roles"] == ["auditor"]
    assert b.client.get("/api/v1/me", headers={"Authorization": "Bearer alu_wrong"}).status_code == 401
    # The API does not accept the browser's session cookie in place of a token.
    assert b.get("/api/v1/me").status_code == 401
    b.post("/account/api-token", {"action": "revoke"})
    assert b.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
