"""Window approvals in a real browser (issue 16, finding 1): the review shows the shape a
window covers only in an explicit second step, the window is listed, and revoking it
asks for confirmation and then stops it at once."""
from __future__ import annotations

from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry, FingerprintApproval
from tests.browser.conftest import login, shot
from tests.integration.portal.held import decide, sql_op

STATEMENT = "UPDATE invoices SET amount = 12 WHERE id = 44"
SHAPE = "UPDATE invoices SET amount = $1 WHERE id = $2"


def test_window_shown_before_the_click_then_listed_and_revoked(page):
    verdict = decide(sql_op(STATEMENT), hold=0)
    login(page, "alice@example.com")
    page.goto(f"/reviews/{verdict.review_id}")
    assert page.inner_text("#approve-once") == "Approve once: exactly this operation"
    # The window is a second, explicit step: its shape is shown before its button.
    assert not page.is_visible("#approve-window")
    page.click("#window-choice summary")
    assert page.inner_text("#window-shape") == SHAPE
    assert "any length" in page.inner_text("#window-note")
    page.select_option("#window", "15")
    shot(page, "review-window-choice")
    page.click("#approve-window")
    page.wait_for_selector(".flash.ok")
    assert decide(sql_op(STATEMENT), hold=0).action == "allow"

    page.click("#nav-windows")
    row = page.locator("#windows tr[data-window]")
    row.wait_for()
    assert row.count() == 1 and SHAPE in row.inner_text() and "alice@example.com" in row.inner_text()
    shot(page, "windows")
    # Cancelling the confirmation revokes nothing.
    page.locator("#windows button.danger").click()
    assert page.dialogs and "Revoke the window of billing-agent" in page.dialogs[-1]
    assert page.locator("#windows tr[data-window]").count() == 1
    page.evaluate("window.confirm = () => true")
    page.locator("#windows button.danger").click()
    page.wait_for_selector(".flash.ok")
    assert "is revoked" in page.inner_text(".flash.ok")
    assert page.locator("#windows tr[data-window]").count() == 0
    again = decide(sql_op(STATEMENT), hold=0)
    assert again.action == "review" and again.review_id != verdict.review_id
    with session_scope() as s:
        assert s.scalars(select(FingerprintApproval.revoked_by)).one() == "alice@example.com"
        assert s.scalars(select(AuditEntry.actor).where(AuditEntry.action == "window.revoked")).one() == \
            "alice@example.com"
