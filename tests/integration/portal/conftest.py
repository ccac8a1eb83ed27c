"""Portal tests with Flask's test client over a real, migrated store."""
from __future__ import annotations

import re

import pytest

from app.recording import reset_recorder
from tests.integration.portal.scenario import PASSWORD, seed_scenario


@pytest.fixture
def scenario(store):
    reset_recorder()
    sc = seed_scenario()
    yield sc
    reset_recorder()


@pytest.fixture
def app(scenario):
    from app.portal import audit_views, create_app

    audit_views._last.clear()  # the PostgreSQL test database keeps its URL between tests
    return create_app({"TESTING": True})


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


class Browser:
    """A test client that logs in like a person: it reads each form's CSRF token."""

    def __init__(self, app) -> None:
        self.client = app.test_client()
        self.token = ""

    def login(self, email: str, password: str = PASSWORD):
        page = self.client.get("/login").get_data(as_text=True)
        resp = self.client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_from(page)})
        self.refresh_token()
        return resp

    def refresh_token(self, path: str = "/account") -> None:
        html = self.client.get(path).get_data(as_text=True)
        m = re.search(r'name="csrf_token" value="([^"]+)"', html)
        self.token = m.group(1) if m else ""

    def get(self, path: str, **kw):
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kw):
        body = dict(data or {})
        if csrf:
            body["csrf_token"] = self.token
        return self.client.post(path, data=body, **kw)


@pytest.fixture
def browser_for(app):
    def make(email: str | None = None) -> Browser:
        b = Browser(app)
        if email:
            resp = b.login(email)
            assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
        return b

    return make
