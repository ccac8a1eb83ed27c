"""One reviewer walked through an access-review campaign in Chromium: start, My reviews, certify, revoke."""
from __future__ import annotations

from sqlalchemy import select

from app.db import session_scope
from app.models import Campaign, CampaignItem, Grant
from tests.browser.conftest import login, shot


def _items() -> dict[str, CampaignItem]:
    with session_scope() as s:
        return {i.connection: i for i in s.scalars(select(CampaignItem))}


def test_a_reviewer_walks_through_a_campaign(browser, live):
    with session_scope() as s:
        s.add(Campaign(name="quarterly-access", reviewers="owner", schedule="0 9 1 */3 *",
                       duration_seconds=14 * 86400, on_deadline="revoke"))
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=live.url)
    context.route("http*://**", lambda route: route.continue_()
                  if route.request.url.startswith(("http://127.0.0.1", "http://localhost")) else route.abort())
    page = context.new_page()
    page.set_default_timeout(15_000)
    confirms: list[str] = []
    page.on("dialog", lambda d: (confirms.append(d.message), d.accept()))  # the reviewer says yes
    try:
        # An admin starts the run from the portal.
        login(page, "admin@example.com")
        page.goto("/campaigns")
        page.click("tr[data-campaign=quarterly-access] button:has-text('Start now')")
        page.wait_for_selector(".flash.ok")
        assert "run 1 started with 3 item(s)" in page.inner_text(".flash.ok")
        assert confirms[-1] == "Start a run of quarterly-access now?"
        page.click("form[action='/logout'] button")

        # Alice owns payments-api and is in dba (billing-db): two items are hers.
        login(page, "alice@example.com")
        assert page.inner_text("#nav-reviews") == "2"
        page.click("nav.side a:has-text('My reviews')")
        page.wait_for_selector("#my-reviews")
        assert page.locator("#my-reviews tr[data-item]").count() == 2
        assert "0 of 3 decided" in page.inner_text(".run-progress")
        row_db = page.locator("tr[data-item]", has_text="billing-db")
        assert "Last used:" in row_db.inner_text() and "narrow it to read-only" in row_db.inner_text()
        shot(page, "my-reviews")

        # Certify with an empty justification: the form will not submit.
        row_db.locator("button:has-text('Certify')").click()
        assert _items()["billing-db"].status == "pending"
        row_db.locator("textarea").fill("nightly invoice reconciliation")
        row_db.locator("button:has-text('Certify')").click()
        page.wait_for_selector(".flash.ok")
        assert "certified" in page.inner_text(".flash.ok")

        # Revoke payments-api: a confirmation first, then the grant is gone at the gate.
        page.locator("tr[data-item]", has_text="payments-api").locator("button:has-text('Revoke')").click()
        page.wait_for_selector(".flash.ok")
        assert "revoked" in page.inner_text(".flash.ok")
        assert confirms[-1].startswith("Revoke billing-agent on payments-api now?")
        assert "Nothing to review" in page.inner_text("main")
        assert page.locator("#nav-reviews").is_hidden()

        items = _items()
        assert items["billing-db"].status == "certified"
        assert items["billing-db"].justification == "nightly invoice reconciliation"
        assert items["payments-api"].status == "revoked" and items["web-1"].status == "pending"
        with session_scope() as s:
            assert s.get(Grant, items["payments-api"].grant_id).revoked_at is not None

        # The run's page shows the progress; the evidence downloads.
        page.goto("/campaigns")
        page.click("a:has-text('run 1')")
        assert "2 of 3 decided" in page.inner_text("#progress")
        with page.expect_download() as dl:
            page.click("a:has-text('CSV')")
        text = dl.value.path().read_text(encoding="utf-8")
        assert "nightly invoice reconciliation" in text and "alice@example.com" in text
        shot(page, "campaign-run")
    finally:
        context.close()
