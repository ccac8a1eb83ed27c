"""Window approvals in the portal (issue 16, finding 1): the review page shows exactly
what a window covers before the click, active windows are listed, and an approver can
revoke one (audited), after which the shape asks again."""
from __future__ import annotations

from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry, FingerprintApproval, Review
from app.types import Operation
from tests.integration.portal.held import decide, sql_op


def test_the_review_page_shows_the_shape_a_window_covers_before_the_click(browser_for):
    verdict = decide(sql_op("UPDATE invoices SET amount = 10 WHERE id = 42"), hold=0)
    page = browser_for("alice@example.com").get(f"/reviews/{verdict.review_id}").get_data(as_text=True)
    assert "Approve once: exactly this operation" in page
    shape = page.split('id="window-shape">', 1)[1].split("</pre>", 1)[0]
    assert shape == "UPDATE invoices SET amount = $1 WHERE id = $2"
    assert "a list of values matches at any length" in page
    assert "Approve this shape for this long" in page


def test_the_review_page_shows_bound_parameters_and_a_requester_who_left(browser_for):
    op = Operation(protocol="postgres", connection="billing-db", kind="write", targets=("invoices",),
                   text="UPDATE invoices SET amount = $1 WHERE id = $2", params=("10", None), fingerprint="fp:p")
    verdict = decide(op, hold=0)
    from app import approvals
    with session_scope() as s:
        approvals.requester_gone(s, verdict.review_id, "billing-agent", "the client disconnected")
    page = browser_for("alice@example.com").get(f"/reviews/{verdict.review_id}").get_data(as_text=True)
    params = page.split('id="params"', 1)[1].split("</ol>", 1)[0]
    assert "<li>10</li>" in params and "NULL" in params
    assert "requester gone" in page and "nothing ran" in page


def test_active_windows_are_listed_and_an_approver_can_revoke_one(browser_for):
    text = "UPDATE invoices SET amount = 11 WHERE id = 43"
    verdict = decide(sql_op(text), hold=0)
    alice = browser_for("alice@example.com")
    alice.post(f"/reviews/{verdict.review_id}/vote", {"action": "approve_window", "window_minutes": "60"})
    assert decide(sql_op(text), hold=0).action == "allow"
    listing = alice.get("/windows").get_data(as_text=True)
    assert "UPDATE invoices SET amount = $1 WHERE id = $2" in listing and f"review #{verdict.review_id}" in listing
    with session_scope() as s:
        window_id = s.scalars(select(FingerprintApproval.id)).one()
    # An auditor sees the list but cannot revoke.
    carol = browser_for("carol@example.com")
    assert f'data-window="{window_id}"' in carol.get("/windows").get_data(as_text=True)
    assert carol.post(f"/windows/{window_id}/revoke").status_code == 403
    assert alice.post(f"/windows/{window_id}/revoke").status_code == 302
    assert f'data-window="{window_id}"' not in alice.get("/windows").get_data(as_text=True)
    # Revoked already: refused, said on the list (not a 404: the window exists).
    again = alice.post(f"/windows/{window_id}/revoke", follow_redirects=True)
    assert again.status_code == 200 and "has already ended" in again.get_data(as_text=True)
    # No such window: the 404 page, by the error's type.
    missing = alice.post("/windows/424242/revoke")
    assert missing.status_code == 404 and "window 424242 does not exist" in missing.get_data(as_text=True)
    again = decide(sql_op(text), hold=0)
    assert again.action == "review" and again.review_id != verdict.review_id
    with session_scope() as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "window.revoked")).one()
        assert entry.actor == "alice@example.com" and entry.data["window_id"] == window_id
        assert s.get(Review, verdict.review_id).status == "approved"


def test_the_queue_flags_a_requester_who_left_and_updates_for_it(browser_for):
    from app import approvals
    verdict = decide(sql_op("UPDATE invoices SET amount = 13 WHERE id = 45"), hold=0)
    b = browser_for("carol@example.com")
    state = b.get("/reviews/updates?state=").get_json()["state"]
    assert "requester gone" not in b.get("/reviews").get_data(as_text=True)
    with session_scope() as s:
        approvals.requester_gone(s, verdict.review_id, "billing-agent", "the client disconnected")
    changed = b.get(f"/reviews/updates?state={state}").get_json()
    assert changed["state"] != state and "requester gone" in changed["html"]
