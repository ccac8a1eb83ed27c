"""Replay in a real browser: SSH terminal, SQL and HTTP timelines, run view, XSS inertness."""
from __future__ import annotations

import json
from datetime import timedelta

from playwright.sync_api import expect

from app.db import session_scope
from app.models import utcnow
from app.changes import add_grant
from app.recording import recorder

from tests.browser.conftest import login, shot
from tests.integration.portal.held import decide, http_op, sql_op
from tests.integration.portal.scenario import RUN_ID, seed_audit

INJECTED = "main img[src=x], main svg[onload], main script, main [onerror]"


def _assert_inert(page) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator(INJECTED).count() == 0
    assert page.dialogs == []


def test_ssh_session_replays_in_the_terminal_player(page, scenario):
    login(page, "carol@example.com")
    page.goto("/sessions?protocol=ssh")
    page.locator("#sessions a.rowlink").first.click()
    assert page.url.endswith(scenario.ssh_session)
    page.goto(f"/sessions/{scenario.ssh_session}?autoplay=1&speed=8")
    terminal = page.locator("#player .ap-term")
    terminal.wait_for()
    # A locator wait, not wait_for_function: the portal's CSP forbids eval, which
    # wait_for_function's polling needs whenever its first look comes back false.
    expect(terminal).to_contain_text("deploy-finished-ok", timeout=15_000)
    text = terminal.inner_text()
    assert "systemctl status api" in text and "denied by rule no-rm-rf" in text
    assert "deny" in page.inner_text("main table")
    shot(page, "replay")

    cast = page.request.get(f"/sessions/{scenario.ssh_session}.cast?download=1")
    assert cast.status == 200
    assert "attachment" in cast.headers["content-disposition"]
    lines = cast.text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 100
    assert any("deploy-finished-ok" in json.loads(line)[2] for line in lines[1:])


def test_recorded_sql_and_http_with_xss_payloads_are_shown_as_text(page, scenario):
    login(page, "alice@example.com")
    page.goto(f"/sessions/{scenario.sql_session}")
    main = page.inner_text("main")
    assert "<script>window.__xss=1</script>" in main  # the payload is there, as text
    assert "a***@example.com" in main and "DROP TABLE invoices" in main
    assert page.locator(".verdict.v-deny").count() == 1
    _assert_inert(page)

    page.goto(f"/sessions/{scenario.http_session}")
    main = page.inner_text("main")
    assert "onerror=\"window.__xss=2\"" in main
    assert "refunds-need-finance" in main and "403" in main
    _assert_inert(page)

    page.goto(f"/runs/{RUN_ID}")
    assert page.locator("#timeline li").count() >= 15
    assert {"ssh", "postgres", "http"} <= set(page.locator("#timeline .proto").all_inner_texts())
    _assert_inert(page)


def test_sessions_filters_narrow_the_list(page, scenario):
    login(page, "alice@example.com")
    page.goto("/sessions")
    assert page.locator("#sessions tbody tr").count() == 3
    page.select_option("#f-proto", "postgres")
    page.click("form[role=search] button[type=submit]")
    assert page.locator("#sessions tbody tr").count() == 1
    page.goto("/sessions?verdict=denied")
    assert page.locator("#sessions tbody tr").count() == 3  # every seeded session has a denial
    page.goto("/sessions?service_account=ci-deployer")
    rows = page.locator("#sessions tbody tr")
    assert rows.count() == 1 and "ssh" in rows.first.inner_text()
    page.goto("/sessions?since=2999-01-01")
    assert page.locator("#sessions").count() == 0 and "No sessions match" in page.inner_text("main")


def test_dashboard_shows_what_needs_attention(page, scenario):
    decide(sql_op("UPDATE invoices SET status = 'void' WHERE id = 31"), hold=0)
    decide(http_op("POST", "/v1/refunds"), hold=0)
    decide(sql_op("DELETE FROM invoices WHERE created_at < '2020-01-01'"), hold=0, account="billing-agent")
    seed_audit(900)
    # An agent connected right now, and a grant nobody has used since it was made 60 days ago.
    live = recorder().open(protocol="postgres", connection="billing-db", service_account="billing-agent")
    recorder().flush()
    with session_scope() as s:
        grant = add_grant(s, "admin@example.com", "ci-deployer", "billing-db", None)
        grant.created_at = utcnow() - timedelta(days=60)
    login(page, "admin@example.com")
    page.goto("/")
    assert page.inner_text("#dash-pending") == "3"
    assert "ci-deployer" in page.inner_text("#unused") and "billing-agent" not in page.inner_text("#unused")
    assert page.inner_text("#active-count") == "1"
    assert page.locator(".chart rect").count() == 28  # two bars a day, 14 days
    assert "billing-agent" in page.inner_text(".bars")
    shot(page, "dashboard")
    _assert_inert(page)
    live.close()
