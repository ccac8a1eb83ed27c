"""Issue 20 in a real browser: the whole operation, the real deadline, a queue of my own,
live updates, context, and a phone that works."""
from __future__ import annotations

import json
import re
from dataclasses import replace

from playwright.sync_api import expect
from sqlalchemy import select

from app import approvals
from app.db import session_scope
from app.models import Review
from tests.browser.conftest import forget_session, login, shot
from tests.integration.portal.held import HeldClient, decide, http_op, sql_op
from tests.integration.portal.scenario import RUN_ID

PHONE = {"width": 390, "height": 844}


def _refund_op():
    body = {"charge": "ch_1", "amount": 1200, "reason": "duplicate", "card": {"token": "tok_live_secret"}}
    op = http_op("POST", "/v1/refunds")
    return replace(op, text="POST https://api.payments.test/v1/refunds?dry_run=false&expand=charge",
                   headers=(("Content-Type", "application/json"), ("Authorization", "[redacted]"),
                            ("Idempotency-Key", "refund-4711")),
                   body_text=json.dumps(body, indent=2), body_summary="74 bytes, application/json, sha256:ab12",
                   reason="customer asked twice; ticket SUP-3311")


def _vote(review_id: int, email: str, decision: str = "approve", reason: str = "") -> None:
    with session_scope() as s:
        approvals.vote(s, review_id, voter_email=email, decision=decision, reason=reason, via="portal")


def test_http_review_shows_method_url_query_headers_body_and_the_agents_reason(page):
    # finance approves refunds; alice (dba) cannot, so bob looks at it from "All pending".
    verdict = decide(_refund_op(), hold=0)
    login(page, "alice@example.com")
    page.goto(f"/reviews/{verdict.review_id}")
    assert page.inner_text("#operation").startswith("POST")
    assert "https://api.payments.test/v1/refunds" in page.inner_text("#operation")
    query = page.inner_text("#query")
    assert "dry_run" in query and "false" in query and "expand" in query
    headers = page.inner_text("#headers")
    assert "Idempotency-Key" in headers and "refund-4711" in headers
    assert "[redacted]" in headers
    body = page.inner_text("#body")
    assert '"amount": 1200' in body and '"charge": "ch_1"' in body
    assert "customer asked twice" in page.inner_text("#justification")
    assert "changes data" in page.inner_text("#why-risk") or "can change data" in page.inner_text("#why-risk")
    shot(page, "review-http")


def test_sql_review_shows_exact_text_and_parameters_and_keeps_for_update_whole(page):
    statement = "SELECT id, amount FROM invoices WHERE customer_id = $1 AND status = $2 FOR UPDATE"
    op = replace(sql_op(statement), params=("4711", "open"))
    verdict = decide(op, hold=0)
    decide(sql_op("UPDATE invoices SET status = 'void' WHERE id = 9"), hold=0, run_id=RUN_ID)
    login(page, "alice@example.com")
    page.goto(f"/reviews/{verdict.review_id}")
    shown = page.inner_text("#operation")
    assert any(line.strip() == "FOR UPDATE" for line in shown.splitlines()), shown
    assert page.inner_text("#params").split() == ["4711", "open"]
    # Whatever the layout, the statement exactly as sent is one click away.
    assert page.locator("#as-sent").text_content() == statement
    shot(page, "review-sql")


def test_the_agents_deadline_is_shown_apart_from_the_reviews_expiry_and_live_holds_sort_first(page):
    idle = decide(sql_op("UPDATE invoices SET a = 1 WHERE id = 1"), hold=0)  # expires first, nobody waits
    client = HeldClient(sql_op("UPDATE invoices SET a = 2 WHERE id = 2"), hold=40).start()
    login(page, "alice@example.com")
    page.goto("/reviews")
    held_item = page.locator(".qitem", has_text="SET a = 2")
    held_item.wait_for()
    items = page.locator(".qitem")
    assert "SET a = 2" in items.nth(0).inner_text(), "the live hold sorts first"
    assert "agent waiting" in held_item.inner_text()
    assert "agent waiting" not in page.locator(".qitem", has_text="SET a = 1").inner_text()
    held_item.click()
    expect(page.locator("#hold")).to_contain_text("left")
    hold = page.inner_text("#hold")
    m = re.search(r"(\d+):(\d\d) left", hold)
    assert m and 0 < int(m.group(1)) * 60 + int(m.group(2)) <= 40, hold
    expiry = page.inner_text("#expiry")
    assert "review open until" in expiry and "identical retry" in expiry
    page.goto(f"/reviews/{idle.review_id}")
    assert "no longer waiting" in page.inner_text("#hold")
    _vote(_id_of("UPDATE invoices SET a = 2 WHERE id = 2"), "dave@example.com")
    assert client.wait(15).action == "allow"


def _id_of(text: str) -> int:
    with session_scope() as s:
        return s.scalars(select(Review.id).where(Review.operation == text)).one()


def test_needs_my_vote_is_the_default_and_the_badge_counts_only_mine(page):
    decide(sql_op("UPDATE invoices SET b = 1 WHERE id = 1"), hold=0)  # dba
    # alice's own agent asks this one: she may not vote on it.
    decide(sql_op("UPDATE invoices SET b = 2 WHERE id = 2"), subject="alice@example.com", hold=0)
    login(page, "bob@example.com")  # ops, not dba: neither is his
    page.goto("/reviews")
    assert page.locator("#tab-mine").get_attribute("class") == "on"
    assert page.locator(".qitem").count() == 0
    assert page.locator("#nav-pending").is_hidden()
    page.click("#tab-all")
    page.wait_for_url("**/reviews?view=all")
    assert page.locator(".qitem").count() == 2
    assert "not yours to vote" in page.inner_text("#queue-lists")

    forget_session(page)
    login(page, "alice@example.com")
    page.goto("/reviews")
    assert page.locator(".qitem").count() == 1
    assert "SET b = 1" in page.inner_text(".qitem")
    assert page.inner_text("#nav-pending") == "1"
    expect(page).to_have_title(re.compile(r"^\(1\) "))
    page.click("#tab-all")
    assert "requester cannot vote" in page.locator(".qitem", has_text="SET b = 2").inner_text()


def test_an_approval_carries_a_comment_and_the_next_review_opens(page):
    first = decide(sql_op("UPDATE invoices SET c = 1 WHERE id = 1"), hold=0)
    second = decide(sql_op("UPDATE invoices SET c = 2 WHERE id = 2"), hold=0)
    login(page, "alice@example.com")
    page.goto(f"/reviews/{first.review_id}")
    page.click("details.comment summary")
    page.fill("#comment", "checked with the customer")
    page.click("#approve-once")
    page.wait_for_selector(".flash.ok")
    assert f"/reviews/{second.review_id}" in page.url
    with session_scope() as s:
        (v,) = s.get(Review, first.review_id).votes
        assert v.reason == "checked with the customer"
    page.fill("#reason", "not without a ticket")
    page.click("#reject")
    page.wait_for_selector(".flash.info")
    assert "Nothing else needs your vote" in page.inner_text(".flashes")
    page.goto("/reviews")
    recent = page.inner_text("#recent")
    rows = page.locator("#recent tbody tr")
    # Sorted by decision time: the rejection came last, so it is first.
    assert f"#{second.review_id}" in rows.nth(0).inner_text() and f"#{first.review_id}" in rows.nth(1).inner_text()
    assert "alice@example.com" in recent and "checked with the customer" in recent


def test_an_open_review_page_updates_when_someone_else_decides(page):
    verdict = decide(sql_op("UPDATE invoices SET d = 1 WHERE id = 1"), hold=0)
    login(page, "alice@example.com")
    page.goto(f"/reviews/{verdict.review_id}")
    page.wait_for_selector("#approve-once")
    _vote(verdict.review_id, "dave@example.com")
    page.wait_for_selector("#decided-by", timeout=10_000)
    assert "dave@example.com" in page.inner_text("#decided-by")
    assert page.locator("#approve-once").count() == 0
    assert page.locator("h1 .status").inner_text() == "approved"


def test_dashboard_counts_and_title_update_live(page):
    login(page, "alice@example.com")
    page.goto("/")
    assert page.inner_text("#dash-pending") == "0"
    decide(sql_op("UPDATE invoices SET e = 1 WHERE id = 1"), hold=0)
    expect(page.locator("#dash-pending")).to_have_text("1", timeout=10_000)
    expect(page).to_have_title(re.compile(r"^\(1\) "), timeout=10_000)
    assert page.inner_text("#dash-mine") == "1"
    assert page.inner_text("#nav-pending") == "1"
    # The pending list follows the counts: no "Queue is clear" under a count of 1.
    expect(page.locator("#dash-pending-list")).to_contain_text("SET e = 1", timeout=10_000)
    shot(page, "dashboard")


def test_context_history_run_steps_and_what_became_of_the_approval(page):
    earlier = decide(sql_op("DELETE FROM invoices WHERE id = 1"), hold=0)
    _vote(earlier.review_id, "dave@example.com", "reject", "no deletes on Fridays")
    client = HeldClient(sql_op("UPDATE invoices SET f = 1 WHERE id = 1"), hold=40, run_id=RUN_ID).start()
    login(page, "alice@example.com")
    page.goto("/reviews")
    page.locator(".qitem", has_text="SET f = 1").click()
    earlier_rows = page.inner_text("#earlier-reviews")
    assert f"#{earlier.review_id}" in earlier_rows and "rejected" in earlier_rows and "Fridays" in earlier_rows
    history = page.inner_text("#history")
    assert "DROP TABLE invoices" in history and "1 denial" in history  # from the recorded SQL session
    assert RUN_ID in page.inner_text("#run-steps")
    page.click("#approve-once")
    assert client.wait(15).action == "allow"
    page.goto(f"/reviews/{_id_of('UPDATE invoices SET f = 1 WHERE id = 1')}")
    assert "ran" in page.inner_text("#uses")


def _no_horizontal_scroll(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def _no_one_character_columns(page) -> None:
    # A cell squeezed to a character per line is tall and narrow with text in it.
    thin = page.evaluate("""() => Array.from(document.querySelectorAll('main td, main th, main dd, main p, main li'))
        .filter(e => e.offsetParent && e.textContent.trim().length > 3)
        .filter(e => { const r = e.getBoundingClientRect(); return r.width < 24 && r.height > 60; })
        .map(e => e.textContent.trim().slice(0, 30))""")
    assert thin == []


def test_phone_review_page_stacks_without_horizontal_scroll_and_approve_follows_the_statement(browser, live):
    decide(_refund_op(), hold=0)
    statement = ("UPDATE invoices SET status = 'paid', paid_at = now(), note = 'settled by the billing agent after "
                 "reconciliation' WHERE id = 4711 AND customer_id = 99 AND status = 'open'")
    verdict = decide(sql_op(statement), hold=0, run_id=RUN_ID)
    context = browser.new_context(viewport=PHONE, base_url=live.url, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        login(page, "alice@example.com")
        side = page.locator("nav.side").bounding_box()
        assert side["width"] <= PHONE["width"] and side["height"] < 80, "the sidebar is a top bar"
        page.goto("/reviews?view=all")
        _no_horizontal_scroll(page)
        _no_one_character_columns(page)
        shot(page, "phone-queue")
        page.goto(f"/reviews/{verdict.review_id}")
        _no_horizontal_scroll(page)
        _no_one_character_columns(page)
        statement_bottom = page.locator(".area-op").bounding_box()
        approve = page.locator("#approve-once").bounding_box()
        below = approve["y"] + approve["height"] - (statement_bottom["y"] + statement_bottom["height"])
        assert 0 < below < PHONE["height"], f"Approve is {below}px below the statement"
        shot(page, "phone-review")
        page.locator(".area-op").scroll_into_view_if_needed()
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shot.__globals__["ARTIFACTS"] / "phone-review-first-screen.png"))
        page.goto("/")
        _no_horizontal_scroll(page)
        shot(page, "phone-dashboard")
        with session_scope() as s:
            http_id = s.scalars(select(Review.id).where(Review.protocol == "http")).first()
        page.goto(f"/reviews/{http_id}")
        _no_horizontal_scroll(page)
        shot(page, "phone-review-http")
    finally:
        context.close()
