"""Access reviews in the portal (Flask test client, real store): start, My reviews, decide, bulk, report, JIT."""
from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import select, update
from werkzeug.security import generate_password_hash

from app.db import session_scope
from app.models import AccessRequest, CampaignItem, CampaignRun, Grant, User
from tests.integration.campaigns import world as w
from tests.integration.portal.conftest import Browser

PASSWORD = "correct horse battery staple"


@pytest.fixture
def portal(store):
    from app.recording import reset_recorder

    reset_recorder()
    w.build()
    w.session("idle", "db", w.T0, [w.deny("delete from t")])
    with session_scope() as s:
        s.execute(update(User).values(password_hash=generate_password_hash(PASSWORD)))
    from app.portal import audit_views, create_app

    audit_views._last.clear()
    app = create_app({"TESTING": True})

    def login(email: str) -> Browser:
        b = Browser(app)
        assert b.login(email, PASSWORD).status_code == 302
        return b

    yield login
    reset_recorder()


def _items() -> dict[str, CampaignItem]:
    with session_scope() as s:
        return {i.service_account: i for i in s.scalars(select(CampaignItem))}


def test_start_review_certify_revoke_and_report(portal):
    admin, owner, other = portal("admin@example.com"), portal("owner@example.com"), portal("other@example.com")
    page = admin.get("/campaigns").get_data(as_text=True)
    assert 'data-campaign="quarterly"' in page and "never run" in page
    assert other.post("/campaigns/quarterly/start").status_code == 403  # admins only
    resp = admin.post("/campaigns/quarterly/start")
    assert resp.status_code == 302 and "/campaigns/runs/" in resp.headers["Location"]
    with session_scope() as s:
        run = s.scalars(select(CampaignRun)).one()
        assert run.started_by == "admin@example.com"
    mine = owner.get("/campaigns/reviews").get_data(as_text=True)
    assert mine.count("data-item=") == 4  # the db grants; the api one belongs to group:web
    assert re.search(r'id="nav-reviews"\s*>4</span>', mine)  # the badge
    assert "never used" in mine or "too new" in mine
    assert "0 of 5 decided" in mine
    items = _items()
    # Certify without a justification: refused, nothing changes.
    owner.refresh_token("/campaigns/reviews")
    page = owner.post(f"/campaigns/items/{items['writer'].id}/decide", {"decision": "certify", "justification": ""},
                      follow_redirects=True).get_data(as_text=True)
    assert "needs a justification" in page and _items()["writer"].status == "pending"
    owner.post(f"/campaigns/items/{items['writer'].id}/decide", {"decision": "certify", "justification": "ETL"})
    owner.post(f"/campaigns/items/{items['idle'].id}/decide", {"decision": "revoke"})
    after = _items()
    assert after["writer"].status == "certified" and after["writer"].justification == "ETL"
    assert after["idle"].status == "revoked"
    with session_scope() as s:
        assert s.get(Grant, after["idle"].grant_id).revoked_at is not None
    # Someone else's item: refused.
    other.refresh_token("/campaigns/reviews")
    page = other.post(f"/campaigns/items/{items['reader'].id}/decide", {"decision": "revoke"},
                      follow_redirects=True).get_data(as_text=True)
    assert "is not a reviewer" in page and _items()["reader"].status == "pending"
    # Bulk: accept the suggestions of what is left.
    owner.refresh_token("/campaigns/reviews")
    page = owner.client.post("/campaigns/reviews/accept", data={
        "csrf_token": owner.token, "item": [str(items["reader"].id), str(items["fresh"].id)]},
        follow_redirects=True).get_data(as_text=True)
    assert "Suggestions accepted: 2 revoked" in page  # neither was used since it was granted
    assert {_items()[k].status for k in ("reader", "fresh")} == {"revoked"}
    assert "Nothing to review" in owner.get("/campaigns/reviews").get_data(as_text=True)
    run_page = admin.get(f"/campaigns/runs/{run.id}").get_data(as_text=True)
    assert "4 of 5 decided" in run_page
    report = admin.get(f"/campaigns/runs/{run.id}/report.csv")
    assert report.status_code == 200 and "attachment" in report.headers["Content-Disposition"]
    rows = {r["service_account"]: r for r in csv.DictReader(io.StringIO(report.get_data(as_text=True)))}
    assert rows["writer"]["justification"] == "ETL" and rows["idle"]["decision"] == "revoked"
    data = admin.get(f"/campaigns/runs/{run.id}/report.json").get_json()
    assert {i["service_account"] for i in data["items"]} == set(rows)


def test_access_request_in_the_portal_and_api(portal):
    owner, other = portal("owner@example.com"), portal("other@example.com")
    with session_scope() as s:
        s.execute(update(Grant).where(Grant.id == w.grant_id("idle", "db")).values(revoked_at=w.T0))
    other.refresh_token("/access-requests")
    page = other.post("/access-requests", {"service_account": "idle", "connection": "db", "for": "2h",
                                           "pending_for": "1h", "reason": "incident 4711"},
                      follow_redirects=True).get_data(as_text=True)
    assert "is waiting for approvers" in page
    with session_scope() as s:
        req_id = s.scalars(select(AccessRequest.id)).one()
    # The requester may not approve their own request; the owner (group dba) does.
    refused = other.post(f"/access-requests/{req_id}/approve", follow_redirects=True)
    assert refused.status_code == 200 and "requester cannot vote" in refused.get_data(as_text=True)
    owner.refresh_token("/access-requests")
    # No such request: the 404 page, by the error's type (a refused vote stays a message on the list).
    missing = owner.post("/access-requests/424242/approve")
    assert missing.status_code == 404 and "access request 424242 does not exist" in missing.get_data(as_text=True)
    owner.post(f"/access-requests/{req_id}/approve")
    with session_scope() as s:
        req = s.get(AccessRequest, req_id)
        assert req.status == "approved" and s.get(Grant, req.grant_id).expires_at is not None
    # The API, with a portal API token.
    from app.portal.security import API_TOKEN_PREFIX
    import hashlib
    import secrets

    token = API_TOKEN_PREFIX + secrets.token_urlsafe(24)
    with session_scope() as s:
        s.execute(update(User).where(User.email == "other@example.com")
                  .values(api_token_hash=hashlib.sha256(token.encode()).hexdigest()))
    client = owner.client.application.test_client()
    resp = client.post("/api/v1/access-requests", headers={"Authorization": f"Bearer {token}"},
                       json={"service_account": "fresh", "connection": "api", "for": "30m", "reason": "debug"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"] == "pending" and body["requested_by"] == "other@example.com"
    got = client.get(f"/api/v1/access-requests/{body['id']}", headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200 and got.get_json()["id"] == body["id"]
    missing = client.get("/api/v1/access-requests/424242", headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    bad = client.post("/api/v1/access-requests", headers={"Authorization": f"Bearer {token}"},
                      json={"service_account": "fresh", "connection": "api", "for": "forever", "reason": "x"})
    assert bad.status_code == 400
