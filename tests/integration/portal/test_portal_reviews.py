"""Review pages: the live queue's change detection, approval windows, refusals."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.db import session_scope
from app.models import FingerprintApproval, Review, utcnow
from tests.integration.portal.held import decide, sql_op


def test_queue_updates_answer_204_until_something_changes(browser_for):
    b = browser_for("carol@example.com")
    first = b.get("/reviews/updates?state=")
    state = first.get_json()["state"]
    assert first.get_json()["pending"] == 0
    assert b.get(f"/reviews/updates?state={state}").status_code == 204
    decide(sql_op("UPDATE invoices SET a = 3 WHERE id = 3"), hold=0)
    changed = b.get(f"/reviews/updates?state={state}").get_json()
    assert changed["pending"] == 1 and "UPDATE invoices SET a = 3" in changed["html"]
    assert changed["state"] != state


def test_approve_this_fingerprint_for_n_minutes(browser_for):
    verdict = decide(sql_op("UPDATE invoices SET b = 1 WHERE id = 5"), hold=0)
    b = browser_for("alice@example.com")
    page = b.get(f"/reviews/{verdict.review_id}").get_data(as_text=True)
    assert 'value="approve_window"' in page and "1 hour" in page
    resp = b.post(f"/reviews/{verdict.review_id}/vote", {"action": "approve_window", "window_minutes": "15"})
    assert resp.status_code == 302
    with session_scope() as s:
        fpa = s.scalars(select(FingerprintApproval)).one()
        assert timedelta(minutes=14) < fpa.expires_at - utcnow() <= timedelta(minutes=15)
        assert s.get(Review, verdict.review_id).status == "approved"
    # Within the window the same operation passes without a new review.
    again = decide(sql_op("UPDATE invoices SET b = 1 WHERE id = 5"), hold=0)
    assert again.action == "allow" and again.review_id is None


def test_bad_window_and_unknown_action_are_refused(browser_for):
    verdict = decide(sql_op("UPDATE invoices SET c = 1 WHERE id = 6"), hold=0)
    b = browser_for("alice@example.com")
    b.post(f"/reviews/{verdict.review_id}/vote", {"action": "approve_window", "window_minutes": "99999"})
    page = b.get(f"/reviews/{verdict.review_id}").get_data(as_text=True)
    assert "approval window must be 1..1440 minutes" in page
    assert b.post(f"/reviews/{verdict.review_id}/vote", {"action": "maybe"}).status_code == 400
    assert b.get("/reviews/424242").status_code == 404
    with session_scope() as s:
        assert s.get(Review, verdict.review_id).status == "pending"


def test_auditor_vote_is_forbidden_even_with_a_token(browser_for):
    verdict = decide(sql_op("UPDATE invoices SET d = 1 WHERE id = 7"), hold=0)
    b = browser_for("carol@example.com")
    assert 'id="no-vote"' in b.get(f"/reviews/{verdict.review_id}").get_data(as_text=True)
    assert b.post(f"/reviews/{verdict.review_id}/vote", {"action": "approve"}).status_code == 403
