"""The JSON API: tokens, roles, votes through approvals, sessions, audit, grants."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry, Grant, User
from app.portal.security import new_api_token
from app.versions import current_version
from tests.integration.portal.held import HeldClient, decide, sql_op


@pytest.fixture
def tokens(scenario):
    out = {}
    with session_scope() as s:
        for user in s.scalars(select(User)):
            token, digest = new_api_token()
            user.api_token_hash = digest
            out[user.email.split("@")[0]] = token
    return out


@pytest.fixture
def api(app, tokens):
    client = app.test_client()

    def call(method: str, path: str, who: str, **kw):
        return client.open("/api/v1" + path, method=method, headers={"Authorization": f"Bearer {tokens[who]}"}, **kw)

    return call


def test_openapi_document_is_served_and_names_every_route(app):
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {p for p in doc["paths"]}
    routes = {r.rule[len("/api/v1"):].replace("<id:", "{").replace("<", "{").replace(">", "}")
              for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1/") and r.endpoint != "api.openapi"}
    assert routes == documented


def test_vote_through_the_api_wakes_the_held_client(api):
    client = HeldClient(sql_op("UPDATE invoices SET x = 2 WHERE id = 40"), hold=30).start()
    for _ in range(100):
        listed = api("GET", "/reviews?status=pending", "carol").get_json()["items"]
        if listed:
            break
        import time

        time.sleep(0.05)
    review_id = listed[0]["id"]
    assert listed[0]["operation"].startswith("UPDATE invoices") and listed[0]["rule"] == "writes-need-dba"
    resp = api("POST", f"/reviews/{review_id}/vote", "alice", json={"decision": "approve", "window_minutes": 30})
    assert resp.status_code == 200 and resp.get_json()["status"] == "approved"
    verdict = client.wait(10)
    assert verdict.action == "allow" and verdict.status == "approved"
    # The window (a shape) lets the same operation straight through afterwards.
    again = decide(sql_op("UPDATE invoices SET x = 2 WHERE id = 40"), hold=0)
    assert again.action == "allow" and "shape approved" in again.message


def test_vote_refusals_through_the_api(api):
    verdict = decide(sql_op("UPDATE invoices SET y = 1 WHERE id = 41"), subject="dave@example.com", hold=0)
    rid = verdict.review_id
    self_vote = api("POST", f"/reviews/{rid}/vote", "dave", json={"decision": "approve"})
    assert self_vote.status_code == 409 and "own review" in self_vote.get_json()["message"]
    outsider = api("POST", f"/reviews/{rid}/vote", "bob", json={"decision": "approve"})
    assert outsider.status_code == 409 and "approver group" in outsider.get_json()["message"]
    auditor = api("POST", f"/reviews/{rid}/vote", "carol", json={"decision": "approve"})
    assert auditor.status_code == 403
    no_reason = api("POST", f"/reviews/{rid}/vote", "alice", json={"decision": "reject"})
    assert no_reason.status_code == 400
    bad = api("POST", f"/reviews/{rid}/vote", "alice", json={"decision": "approve", "window_minutes": "60"})
    assert bad.status_code == 400
    missing = api("POST", "/reviews/999999/vote", "alice", json={"decision": "approve"})
    assert missing.status_code == 404
    reject = api("POST", f"/reviews/{rid}/vote", "alice", json={"decision": "reject", "reason": "not today"})
    assert reject.status_code == 200 and reject.get_json()["status"] == "rejected"
    assert reject.get_json()["votes"][0]["via"] == "api"


def test_sessions_and_audit_through_the_api(api, scenario):
    page = api("GET", "/sessions?limit=2", "bob").get_json()
    assert len(page["items"]) == 2 and page["next"]
    rest = api("GET", f"/sessions?limit=2&cursor={page['next']}", "bob").get_json()
    assert len(rest["items"]) == 1 and rest["next"] is None
    ids = {i["id"] for i in page["items"] + rest["items"]}
    assert ids == {scenario.ssh_session, scenario.sql_session, scenario.http_session}
    detail = api("GET", f"/sessions/{scenario.sql_session}", "bob").get_json()
    assert detail["events"][1]["data"]["sql"].startswith("SELECT id, email") and detail["events"][1]["data"]["rows"] == 2
    assert api("GET", "/sessions?protocol=gopher", "bob").status_code == 400
    assert api("GET", "/audit", "bob").status_code == 403  # approvers do not read the audit log
    audit = api("GET", "/audit?action=policy&limit=5", "carol").get_json()
    assert [e["action"] for e in audit["items"]] == ["policy.apply"]
    verify = api("POST", "/audit/verify", "carol").get_json()
    assert verify["ok"] and verify["checked"] > 5
    assert api("GET", "/audit/status", "carol").get_json()["verified_by"] == "carol@example.com"


def test_grants_through_the_api_are_audited_and_reach_the_gate(api):
    v0 = _version()
    assert api("POST", "/grants", "carol", json={"service_account": "ci-deployer", "connection": "billing-db"}).status_code == 403
    made = api("POST", "/grants", "admin", json={"service_account": "ci-deployer", "connection": "billing-db",
                                                 "expires_at": "2999-01-01T00:00:00Z"})
    assert made.status_code == 201
    grant = made.get_json()
    assert grant["state"] == "active" and grant["source"] == "portal" and _version() > v0
    dup = api("POST", "/grants", "admin", json={"service_account": "ci-deployer", "connection": "billing-db"})
    assert dup.status_code == 409
    unknown = api("POST", "/grants", "admin", json={"service_account": "nobody", "connection": "billing-db"})
    assert unknown.status_code == 409 and "unknown service account" in unknown.get_json()["message"]
    past = api("POST", "/grants", "admin", json={"service_account": "billing-agent", "connection": "web-1",
                                                 "expires_at": "2001-01-01"})
    assert past.status_code == 409
    assert decide(sql_op("SELECT 1", kind="read"), account="ci-deployer", hold=0).action == "allow"
    revoked = api("POST", f"/grants/{grant['id']}/revoke", "admin")
    assert revoked.status_code == 200 and revoked.get_json()["state"] == "revoked"
    assert api("POST", f"/grants/{grant['id']}/revoke", "admin").status_code == 409
    denied = decide(sql_op("SELECT 1", kind="read"), account="ci-deployer", hold=0)
    assert denied.action == "deny"
    with session_scope() as s:
        actions = [e.action for e in s.scalars(select(AuditEntry).where(AuditEntry.action.like("grant.%")))]
    assert actions == ["grant.add", "grant.revoke"]
    listed = api("GET", "/grants?state=all", "carol").get_json()["items"]
    assert any(g["id"] == grant["id"] and g["state"] == "revoked" for g in listed)


def test_expire_a_grant_through_the_api(api):
    with session_scope() as s:
        gid = s.scalars(select(Grant.id)).first()
    resp = api("POST", f"/grants/{gid}/expire", "admin", json={})
    assert resp.status_code == 200 and resp.get_json()["state"] in ("expired", "active")
    assert api("POST", f"/grants/{gid}/expire", "admin", json={}).status_code == 409
    assert api("POST", "/grants/424242/expire", "admin", json={}).status_code == 404


def _version() -> int:
    with session_scope() as s:
        return current_version(s)


def test_text_no_store_can_hold_is_refused_not_crashed(api):
    body = '{"service_account": "\\ud800", "connection": "billing-db"}'
    resp = api("POST", "/grants", "admin", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert api("GET", "/audit?q=%00", "carol").status_code == 400
    assert api("GET", "/reviews/2147483648", "carol").status_code == 404
    assert api("GET", "/audit?before=2147483648", "carol").status_code == 400
