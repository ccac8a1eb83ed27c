"""Issue 20, items 7-9 in a real browser: honest labels, audit that matters, and the
small things users notice."""
from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import select

from app.cli import main as cli
from app.db import session_scope
from app.models import AuditEntry, User
from tests.browser.conftest import forget_session, login, shot
from tests.integration.portal.held import decide, sql_op
from tests.integration.portal.scenario import PASSWORD, RUN_ID


def _entries(action: str) -> list[AuditEntry]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))


def test_favicon_and_a_404_that_says_what_was_not_found(page, live):
    login(page, "alice@example.com")
    assert page.locator("link[rel=icon]").count() == 1
    icon = page.request.get(f"{live.url}/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    resp = page.goto("/reviews/987654")
    assert resp.status == 404
    assert "There is no review #987654" in page.inner_text("main")
    assert page.locator("nav.side").count() == 1  # the portal's own layout, not a bare page
    resp = page.goto("/no/such/page")
    assert resp.status == 404 and "/no/such/page" in page.inner_text("main")


def test_a_rule_yaml_error_names_line_and_column(page):
    login(page, "admin@example.com")
    page.goto("/policy/rules/new")
    page.fill("#text", "name: broken\nmatch: {kind: [write]\naction: deny\n")
    page.click("#rule-form button[type=submit]")
    text = page.inner_text("main")
    assert "invalid YAML: line 3, column" in text, text


def test_expire_asks_for_confirmation_and_names_the_grant(page):
    login(page, "admin@example.com")
    page.goto("/grants")
    row = page.locator("tr", has_text="ci-deployer").first
    row.locator("button", has_text="Expire").click()
    assert page.dialogs and "ci-deployer" in page.dialogs[-1] and "web-1" in page.dialogs[-1]
    # Dismissed: nothing happened.
    assert _entries("grant.expire") == []


def test_the_openapi_document_is_a_page(page):
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    login(page, "carol@example.com")
    page.click("text=API reference")
    page.wait_for_selector(".opblock", timeout=20_000)
    assert page.locator(".opblock").count() > 5
    assert "/reviews/{review_id}/vote" in page.inner_text("#swagger")
    assert not [e for e in errors if "Content Security Policy" in e], errors
    shot(page, "api-docs")


def test_a_user_changes_their_own_password(page):
    login(page, "alice@example.com")
    page.goto("/account")
    page.fill("#pw-current", "wrong password here")
    page.fill("#pw-new", "a much longer new secret")
    page.fill("#pw-again", "a much longer new secret")
    page.click("#pw-submit")
    assert "nothing changed" in page.inner_text(".flash.error")
    page.fill("#pw-current", PASSWORD)
    page.fill("#pw-new", "a much longer new secret")
    page.fill("#pw-again", "a much longer new secret")
    page.click("#pw-submit")
    assert "was changed" in page.inner_text(".flash.ok")
    page.goto("/reviews")  # still signed in in this session
    assert page.locator("nav.side").count() == 1
    forget_session(page)
    page.goto("/login")
    page.fill("#email", "alice@example.com")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.locator("nav.side").count() == 0
    login(page, "alice@example.com", "a much longer new secret")
    assert [e.actor for e in _entries("user.password_change")] == ["alice@example.com"]
    assert len(_entries("user.password_change_refused")) == 1


def test_an_admin_resets_a_password_from_the_cli(page, live):
    result = CliRunner().invoke(cli, ["user", "reset-password", "admin@example.com"])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    password = lines[lines.index("New portal password for admin@example.com:") + 2]
    assert len(password) >= 20 and "=====" in result.output
    login(page, "admin@example.com", password)
    assert _entries("user.password_reset")[-1].target == "admin@example.com"
    missing = CliRunner().invoke(cli, ["user", "reset-password", "nobody@example.com"])
    assert missing.exit_code == 1 and "no portal account" in missing.output


def test_audit_targets_link_and_a_verification_is_audited(page):
    verdict = decide(sql_op("UPDATE invoices SET g = 1 WHERE id = 1"), hold=0)
    login(page, "carol@example.com")
    page.goto("/audit")
    page.click("#verify")
    page.wait_for_selector(".flash.ok")
    (entry,) = _entries("audit.verified")
    assert entry.actor == "carol@example.com" and entry.data["ok"] is True and entry.data["checked"] > 0
    link = page.locator(f"a[href='/reviews/{verdict.review_id}']").first
    link.click()
    assert f"Review #{verdict.review_id}" in page.inner_text("h1")


def test_the_run_view_shows_the_sql_of_each_statement(page):
    login(page, "carol@example.com")
    page.goto(f"/runs/{RUN_ID}")
    outputs = [t for t in page.locator("main").inner_text().splitlines() if "→ SELECT 2" in t]
    assert outputs and all("FROM invoices" in t for t in outputs), outputs
