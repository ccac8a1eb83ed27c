"""The review flows in a real browser: held operation approved, rejection, refusals, roles."""
from __future__ import annotations

import re
import time

from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry, Review, Rule
from tests.browser.conftest import login, shot
from tests.integration.portal.held import HeldClient, decide, http_op, sql_op
from tests.integration.portal.scenario import RUN_ID, XSS, seed_audit


def _review(review_id: int) -> Review:
    with session_scope() as s:
        r = s.get(Review, review_id)
        r.votes  # load while the session is open
        return r


def _pending_id(text: str) -> int:
    with session_scope() as s:
        return s.scalars(select(Review.id).where(Review.operation == text)).one()


def test_held_sql_operation_approved_in_the_browser_lets_the_client_through(page):
    # Two other requests waiting already, so the queue looks like a working day.
    decide(http_op("POST", "/v1/refunds"), hold=0)
    decide(sql_op("DELETE FROM invoices WHERE status = 'void' AND created_at < now() - interval '2 years'"), hold=0)
    seed_audit(400)
    login(page, "alice@example.com")
    page.goto("/reviews")
    page.wait_for_selector(".qitem")
    before = page.locator(".qitem").count()

    statement = "UPDATE invoices SET status = 'paid', paid_at = now() WHERE id = 4711"
    client = HeldClient(sql_op(statement), hold=60, run_id=RUN_ID).start()
    # The queue page is not reloaded: the held operation arrives by live update.
    item = page.locator(".qitem", has_text="UPDATE invoices")
    item.wait_for(timeout=15_000)
    assert page.locator(".qitem").count() == before + 1
    assert not client.done, "the client must be held while the review is pending"
    shot(page, "queue")

    item.click()
    page.wait_for_selector("#approve-once")
    assert "UPDATE invoices" in page.inner_text("#operation")
    assert "writes-need-dba" in page.inner_text("main")
    assert page.locator(".countdown").first.inner_text() not in ("", "expired")
    page.click("#approve-once")
    page.wait_for_selector(".flash.ok")
    assert "is approved" in page.inner_text(".flash.ok")

    verdict = client.wait(15)
    assert verdict is not None and verdict.action == "allow", verdict
    assert verdict.status == "approved"
    # After a decision the approver is taken to the next review that needs them.
    decided = _pending_id(statement)
    assert f"after={decided}" in page.url and f"/reviews/{decided}?" not in page.url
    assert page.locator("h1 .status").inner_text() == "pending"
    page.goto(f"/reviews/{decided}")
    assert page.locator("h1 .status").inner_text() == "approved"


def test_reject_with_a_reason_refuses_the_held_client(page):
    statement = "UPDATE invoices SET amount = 0 WHERE customer_id = 99"
    client = HeldClient(sql_op(statement), hold=60).start()
    login(page, "alice@example.com")
    page.goto("/reviews")
    page.locator(".qitem", has_text="amount = 0").click()
    page.fill("#reason", "Zeroing invoices needs a ticket from finance")
    page.click("#reject")
    page.wait_for_selector(".flash.ok")

    verdict = client.wait(15)
    assert verdict is not None and verdict.action == "deny" and verdict.status == "rejected"
    review = _review(verdict.review_id)
    assert review.status == "rejected" and review.reason == "Zeroing invoices needs a ticket from finance"
    assert "Zeroing invoices needs a ticket from finance" in page.inner_text("main")
    with session_scope() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "review.rejected")).one()
        assert entry.actor == "alice@example.com"


def test_reject_without_a_reason_is_not_counted(page):
    verdict = decide(sql_op("DELETE FROM invoices WHERE id = 1"), hold=0)
    login(page, "alice@example.com")
    page.goto(f"/reviews/{verdict.review_id}")
    # Bypass the browser's own `required` check: the server must insist as well.
    page.evaluate("document.querySelector('#reason').removeAttribute('required')")
    page.click("#reject")
    assert "needs a reason" in page.inner_text(".flash.error")
    assert _review(verdict.review_id).status == "pending"


def _forged_vote(page, review_id: int, action: str = "approve") -> str:
    """A vote POSTed without the buttons (they are not shown): the server must refuse it."""
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    return page.evaluate(
        """async ([url, token, action]) => (await (await fetch(url, {method: 'POST', body: new URLSearchParams(
             {csrf_token: token, action: action})})).text())""",
        [f"/reviews/{review_id}/vote", token, action])


def _refused_votes(review_id: int) -> list[AuditEntry]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == "review.vote_refused",
                                                       AuditEntry.target == f"review:{review_id}")))


def test_approving_ones_own_request_is_refused(page):
    # dave runs an agent under his own identity: he may not approve what it asks.
    verdict = decide(sql_op("UPDATE invoices SET owner = 'dave' WHERE id = 12"), subject="dave@example.com", hold=0)
    login(page, "dave@example.com")
    page.goto(f"/reviews/{verdict.review_id}")
    # He is told why instead of being shown buttons that would be refused.
    assert page.locator("#approve-once").count() == 0
    assert "cannot vote on its own review" in page.inner_text("#no-vote")
    assert "cannot vote on its own review" in _forged_vote(page, verdict.review_id)
    review = _review(verdict.review_id)
    assert review.status == "pending" and review.votes == []
    (entry,) = _refused_votes(verdict.review_id)
    assert entry.actor == "dave@example.com" and "own review" in entry.data["reason"]


def test_a_vote_from_outside_the_approver_groups_is_refused(page):
    verdict = decide(sql_op("UPDATE invoices SET due = now() WHERE id = 3"), hold=0)
    login(page, "bob@example.com")  # approver, but in ops, not dba
    page.goto(f"/reviews/{verdict.review_id}")
    assert "not in an approver group" in page.inner_text("#vote")
    assert page.locator("#approve-once").count() == 0
    assert "is not in an approver group" in _forged_vote(page, verdict.review_id)
    review = _review(verdict.review_id)
    assert review.status == "pending" and review.votes == []
    assert len(_refused_votes(verdict.review_id)) == 1


def test_an_auditor_can_read_but_cannot_vote_or_edit_policy(page):
    verdict = decide(sql_op("UPDATE invoices SET note = 'x' WHERE id = 5"), hold=0)
    login(page, "carol@example.com")
    page.goto(f"/reviews/{verdict.review_id}")
    assert page.locator("#no-vote").is_visible()
    assert page.locator("#approve-once").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    # Even a well-formed POST with a valid CSRF token is refused for the role.
    status = page.evaluate(
        """async ([url, token]) => (await fetch(url, {method: 'POST', body: new URLSearchParams(
             {csrf_token: token, action: 'approve'})})).status""",
        [f"/reviews/{verdict.review_id}/vote", token])
    assert status == 403
    assert _review(verdict.review_id).votes == []

    page.goto("/policy")
    assert page.locator("#rules").is_visible()
    assert page.locator("#new-rule").count() == 0
    page.goto("/policy/rules/no-ddl")
    assert page.locator("#text").get_attribute("readonly") is not None
    status = page.evaluate(
        """async ([token]) => (await fetch('/policy/rules', {method: 'POST', body: new URLSearchParams(
             {csrf_token: token, original: 'no-ddl', text: 'name: no-ddl\\nmatch: {}\\naction: allow\\n'})})).status""",
        [token])
    assert status == 403
    with session_scope() as s:
        assert s.scalars(select(Rule).where(Rule.name == "no-ddl")).one().body["action"] == "deny"
    page.goto("/audit")
    assert page.locator("#audit").is_visible()


def test_a_post_without_csrf_token_is_refused(page):
    verdict = decide(sql_op("UPDATE invoices SET total = 1 WHERE id = 8"), hold=0)
    login(page, "alice@example.com")
    page.goto(f"/reviews/{verdict.review_id}")
    status = page.evaluate(
        """async (url) => (await fetch(url, {method: 'POST', body: new URLSearchParams({action: 'approve'})})).status""",
        f"/reviews/{verdict.review_id}/vote")
    assert status == 400
    # A form whose token was stripped, submitted like a person would, is refused too.
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    page.click("#approve-once")
    assert "security token" in page.inner_text("main")
    review = _review(verdict.review_id)
    assert review.status == "pending" and review.votes == []


def test_an_xss_payload_in_a_held_operation_stays_text(page):
    verdict = decide(sql_op(f"UPDATE invoices SET note = '{XSS}' WHERE id = 9"), hold=0)
    login(page, "alice@example.com")
    for path in ("/reviews", f"/reviews/{verdict.review_id}", "/"):
        page.goto(path)
        page.wait_for_timeout(300)
        assert "<script>window.__xss=1</script>" in page.inner_text("main")
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert page.locator("main img[src=x], main svg[onload], main script").count() == 0
    assert page.dialogs == []


def test_queue_shows_countdown_and_approval_counts(page):
    verdict = decide(sql_op("UPDATE invoices SET currency = 'EUR' WHERE id = 77"), hold=0)
    login(page, "carol@example.com")
    page.goto("/reviews")
    item = page.locator(f"#review-{verdict.review_id}")
    assert "0/1 approvals" in item.inner_text()
    first = item.locator(".countdown").inner_text()
    assert re.match(r"^\d+h \d\dm$|^\d+:\d\d$", first), first
    time.sleep(0.1)
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.getAttribute('data-review')") == str(verdict.review_id)
