"""Policy and inventory edits: same validation as `airlock apply`, audited, secrets write-only."""
from __future__ import annotations

import re

from click.testing import CliRunner
from sqlalchemy import select

from app import vault
from app.db import session_scope
from app.inventory import export_policy
from app.models import AuditEntry, Connection, Rule, ServiceAccount, Token, User
from app.policy import dump_policy
from app.versions import current_version
from tests.integration.portal.scenario import SECRETS

NEW_RULE = """name: no-deletes-at-night
match:
  connection: billing-db
  kind: [write]
  time: {between: "22:00-06:00", tz: UTC}
action: deny
message: No writes at night
"""


def _secrets(name: str) -> dict[str, str]:
    with session_scope() as s:
        row = s.scalars(select(Connection).where(Connection.name == name)).one()
        return {k: v.reveal() for k, v in vault.decrypt(row.secrets).items()}


def _audit(action: str) -> list[AuditEntry]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))


def test_a_new_rule_is_validated_applied_and_audited(browser_for):
    b = browser_for("admin@example.com")
    v0 = _version()
    bad = b.post("/policy/rules", {"original": "", "text": "name: x\nmatch: {kind: [wrte]}\naction: deny\n"})
    assert bad.status_code == 400
    assert "kind" in bad.get_data(as_text=True) and "wrte" in bad.get_data(as_text=True)
    unknown = b.post("/policy/rules", {"original": "", "text": "name: y\nmatch: {connection: nope-db}\naction: deny\n"})
    assert unknown.status_code == 400 and "unknown connection" in unknown.get_data(as_text=True)
    assert _version() == v0
    ok = b.post("/policy/rules", {"original": "", "text": NEW_RULE})
    assert ok.status_code == 302
    with session_scope() as s:
        names = [r.name for r in s.scalars(select(Rule).order_by(Rule.position))]
    assert names[-1] == "no-deletes-at-night" and _version() > v0
    entry = _audit("policy.apply")[-1]
    assert entry.actor == "admin@example.com" and entry.data["created"] == ["rule:no-deletes-at-night"]


def test_rules_move_and_delete(browser_for):
    b = browser_for("admin@example.com")
    b.post("/policy/rules/mask-pii/move", {"direction": "up"})
    with session_scope() as s:
        names = [r.name for r in s.scalars(select(Rule).order_by(Rule.position))]
    assert names.index("mask-pii") == names.index("refunds-need-finance") - 1
    b.post("/policy/rules/no-ddl/delete")
    with session_scope() as s:
        assert s.scalars(select(Rule).where(Rule.name == "no-ddl")).first() is None
    assert "rule:no-ddl" in _audit("policy.apply")[-1].data["removed"]


def test_connection_credentials_are_write_only(browser_for):
    b = browser_for("admin@example.com")
    page = b.get("/connections/billing-db").get_data(as_text=True)
    assert SECRETS["BILLING_DB_PASSWORD"] not in page and "stored" in page
    for path in ("/connections", "/policy/yaml", "/policy/export.yaml", "/audit"):
        text = b.get(path).get_data(as_text=True)
        assert all(secret not in text for secret in SECRETS.values()), path
    # Editing without typing a password keeps the stored one.
    form = {"original": "billing-db", "name": "billing-db", "type": "postgres", "owner": "group:dba",
            "address": "db.internal:5433", "database": "billing", "username": "billing_rw", "password": ""}
    assert b.post("/connections", form).status_code == 302
    assert _secrets("billing-db") == {"password": SECRETS["BILLING_DB_PASSWORD"]}
    with session_scope() as s:
        assert s.scalars(select(Connection).where(Connection.name == "billing-db")).one().config["address"] == "db.internal:5433"
    # Typing one replaces it; the audit entry names the change but not the value.
    b.post("/connections", {**form, "password": "rotated-pw-9"})
    assert _secrets("billing-db") == {"password": "rotated-pw-9"}
    assert "rotated-pw-9" not in str([e.data for e in _audit("policy.apply")])
    # Header injection on an http connection: keep, replace, add.
    http = {"original": "payments-api", "name": "payments-api", "type": "http", "owner": "alice@example.com",
            "hosts": "api.payments.test", "new_header_name": "X-Api-Key", "new_header_value": "k-123"}
    assert b.post("/connections", http).status_code == 302
    assert _secrets("payments-api") == {"header:Authorization": "Bearer pay-tok-123", "header:X-Api-Key": "k-123"}


def test_connection_validation_errors_are_shown(browser_for):
    b = browser_for("admin@example.com")
    resp = b.post("/connections", {"original": "", "name": "bad name!", "type": "postgres", "address": "x:99999"})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "must be 1-200 letters" in text and "address: must be host:port" in text and "username: is required" in text


def test_portal_refuses_file_references_in_pasted_policy(browser_for):
    b = browser_for("admin@example.com")
    with session_scope() as s:
        text = dump_policy(export_policy(s))
    evil = text.replace("${env:AIRLOCK_BILLING_DB_PASSWORD}", "${file:/etc/passwd}")
    resp = b.post("/policy/yaml", {"text": evil, "action": "apply"})
    assert resp.status_code == 400 and "cannot be used from the portal" in resp.get_data(as_text=True)
    assert _secrets("billing-db") == {"password": SECRETS["BILLING_DB_PASSWORD"]}


def test_yaml_page_applies_an_edited_export_keeping_secrets(browser_for):
    b = browser_for("admin@example.com")
    text = b.get("/policy/export.yaml").get_data(as_text=True)
    edited = text.replace("description: CI deploy job", "description: CI deploy job (prod)")
    check = b.post("/policy/yaml", {"text": edited, "action": "check"})
    assert check.status_code == 200 and "The policy is valid" in check.get_data(as_text=True)
    assert b.post("/policy/yaml", {"text": edited, "action": "apply"}).status_code == 302
    with session_scope() as s:
        assert s.scalars(select(ServiceAccount).where(ServiceAccount.name == "ci-deployer")).one().description == "CI deploy job (prod)"
    assert _secrets("billing-db")["password"] == SECRETS["BILLING_DB_PASSWORD"]
    assert _secrets("payments-api") == {"header:Authorization": "Bearer pay-tok-123"}
    assert any(e.action == "policy.export" for e in _audit("policy.export"))


def test_exported_yaml_round_trips_through_airlock_apply(browser_for, tmp_path, monkeypatch):
    from app.cli import main

    b = browser_for("carol@example.com")  # auditors may export
    resp = b.get("/policy/export.yaml")
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    text = resp.get_data(as_text=True)
    placeholders = sorted(set(re.findall(r"\$\{env:(AIRLOCK_[A-Z0-9_]+)\}", text)))
    assert placeholders == ["AIRLOCK_BILLING_DB_PASSWORD", "AIRLOCK_PAYMENTS_API_HEADER_AUTHORIZATION",
                            "AIRLOCK_WEB_1_PASSWORD"]
    path = tmp_path / "exported.yaml"
    path.write_text(text)
    monkeypatch.setenv("AIRLOCK_BILLING_DB_PASSWORD", SECRETS["BILLING_DB_PASSWORD"])
    monkeypatch.setenv("AIRLOCK_PAYMENTS_API_HEADER_AUTHORIZATION", "Bearer " + SECRETS["PAYMENTS_TOKEN"])
    monkeypatch.setenv("AIRLOCK_WEB_1_PASSWORD", SECRETS["WEB1_PASSWORD"])
    v0 = _version()
    result = CliRunner().invoke(main, ["apply", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert "no changes" in result.output and _version() == v0


def test_service_account_tokens_issue_once_and_revoke(browser_for):
    b = browser_for("admin@example.com")
    html = b.post("/service-accounts/billing-agent/tokens", {"ttl": "7d", "description": "nightly"}).get_data(as_text=True)
    token = re.search(r'id="new-token">(alk_[^<]+)<', html).group(1)
    assert token not in b.get("/service-accounts/billing-agent").get_data(as_text=True)
    with session_scope() as s:
        row = s.scalars(select(Token)).one()
    assert _audit("token.issue")[-1].data["token_id"] == row.id
    b.post(f"/service-accounts/billing-agent/tokens/{row.id}/revoke")
    with session_scope() as s:
        assert s.get(Token, row.id).revoked_at is not None
    assert _audit("token.revoke")[-1].actor == "admin@example.com"
    bad = b.post("/service-accounts/billing-agent/tokens", {"ttl": "forever"})
    assert bad.status_code == 400


def test_service_account_edit_and_disable(browser_for):
    b = browser_for("admin@example.com")
    form = {"original": "", "name": "report-gen", "description": "weekly reports", "groups": "agents, reporting"}
    assert b.post("/service-accounts", form).status_code == 302
    with session_scope() as s:
        sa = s.scalars(select(ServiceAccount).where(ServiceAccount.name == "report-gen")).one()
        assert sa.group_names == {"agents", "reporting"}
    bad = b.post("/service-accounts", {"original": "", "name": "x", "oidc_issuer": "not-a-url", "oidc_subject": "s"})
    assert bad.status_code == 400 and "must be an http(s) URL" in bad.get_data(as_text=True)
    b.post("/service-accounts/report-gen/disable")
    with session_scope() as s:
        assert s.scalars(select(ServiceAccount).where(ServiceAccount.name == "report-gen")).one().disabled


def test_users_create_edit_and_reset(browser_for):
    from tests.integration.portal.conftest import Browser

    b = browser_for("admin@example.com")
    html = b.post("/users", {"email": "frank@example.com", "name": "Frank", "roles": ["auditor"], "groups": "sec"}).get_data(as_text=True)
    password = re.search(r'id="new-password">([^<]+)<', html).group(1)
    fresh = Browser(b.client.application)
    assert fresh.login("frank@example.com", password).status_code == 302
    with session_scope() as s:
        frank = s.scalars(select(User).where(User.email == "frank@example.com")).one()
        alice_id = s.scalars(select(User.id).where(User.email == "alice@example.com")).one()
    b.post(f"/users/{frank.id}", {"roles": ["auditor", "approver"], "groups": "sec, dba", "active": "on"})
    with session_scope() as s:
        f = s.get(User, frank.id)
        assert f.roles == ["approver", "auditor"] and f.group_names == {"sec", "dba"}
    # A user the policy declares is changed in the policy, through apply.
    b.post(f"/users/{alice_id}", {"roles": ["approver"], "groups": "dba, finance", "active": "on"})
    with session_scope() as s:
        assert s.get(User, alice_id).group_names == {"dba", "finance"}
        assert "alice@example.com" in dump_policy(export_policy(s)) and "finance" in dump_policy(export_policy(s))
    assert "user:alice@example.com" in _audit("policy.apply")[-1].data["updated"]
    bad = b.post("/users", {"email": "not-an-email", "roles": ["root"]})
    assert bad.status_code == 302
    with session_scope() as s:
        assert s.scalars(select(User).where(User.email == "not-an-email")).first() is None
    assert [e.target for e in _audit("user.create")][-1] == "frank@example.com"


def test_an_admin_cannot_lock_themself_out(browser_for):
    b = browser_for("admin@example.com")
    with session_scope() as s:
        me = s.scalars(select(User).where(User.email == "admin@example.com")).one()
    b.post(f"/users/{me.id}", {"roles": ["auditor"], "groups": "", "active": "on"})
    with session_scope() as s:
        assert s.get(User, me.id).roles == ["admin"]


def _version() -> int:
    with session_scope() as s:
        return current_version(s)


def test_connection_default_is_shown_and_edited(browser_for):
    b = browser_for("admin@example.com")
    form = {"original": "billing-db", "name": "billing-db", "type": "postgres", "owner": "group:dba",
            "address": "db.internal:5432", "database": "billing", "username": "billing_rw", "password": "",
            "default": "review"}
    assert b.post("/connections", form).status_code == 302
    with session_scope() as s:
        assert s.scalars(select(Connection).where(Connection.name == "billing-db")).one().config["default"] == "review"
    listing = b.get("/connections").get_data(as_text=True)
    assert re.search(r'data-default="review"><span class="tag">review</span>', listing)
    page = b.get("/connections/billing-db").get_data(as_text=True)
    assert re.search(r'<option value="review" selected>review', page)
    assert "default: review" in b.get("/policy/export.yaml").get_data(as_text=True)
    # Back to allow: nothing stored, the page says allow.
    assert b.post("/connections", {**form, "default": "allow"}).status_code == 302
    with session_scope() as s:
        assert "default" not in s.scalars(select(Connection).where(Connection.name == "billing-db")).one().config
    assert b.post("/connections", {**form, "default": "sometimes"}).status_code == 400
