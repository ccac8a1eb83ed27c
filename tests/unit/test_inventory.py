from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import audit, vault
from app.db import session_scope
from app.inventory import UnresolvedSecret, apply_policy
from app.models import AuditEntry, Connection, Grant, Rule, ServiceAccount, StoreVersion, User
from app.policy import load_policy
from app.vault import VaultError

POLICY = (Path(__file__).parent.parent / "data" / "policy.yaml").read_text()
ENV = {"BILLING_TOKEN": "bill-secret-123", "ORDERS_DB_PASSWORD": "pw-orders-456"}


def _apply(text=POLICY, env=ENV):
    with session_scope() as s:
        return apply_policy(s, load_policy(text), actor="test", environ=env)


def _counts():
    with session_scope() as s:
        return {m.__name__: s.scalar(select(func.count()).select_from(m)) for m in (ServiceAccount, User, Connection, Grant, Rule, AuditEntry)}


def test_apply_creates_everything_and_is_idempotent(store):
    first = _apply()
    assert "connection:orders-db" in first.created and "rule:no-ddl" in first.created
    counts = _counts()
    second = _apply()
    assert not second.changed, second.summary()
    assert _counts() == counts  # not even an audit entry for a no-op
    with session_scope() as s:
        assert s.get(StoreVersion, "policy").version == 1
        assert audit.verify(s).ok


def test_secrets_are_encrypted_and_never_stored_in_clear(store):
    _apply()
    with session_scope() as s:
        conn = s.scalars(select(Connection).where(Connection.name == "orders-db")).one()
        assert "pw-orders-456" not in (conn.secrets or "")
        assert "pw-orders-456" not in str(conn.config)
        assert vault.decrypt(conn.secrets)["password"].reveal() == "pw-orders-456"
        api = s.scalars(select(Connection).where(Connection.name == "billing-api")).one()
        assert api.config["inject_headers"] == ["Authorization"]
        assert vault.decrypt(api.secrets)["header:Authorization"].reveal() == "Bearer bill-secret-123"
        entries = list(s.scalars(select(AuditEntry)))
        assert all("pw-orders-456" not in str(e.data) for e in entries)


def test_changed_secret_is_an_update(store):
    _apply()
    report = _apply(env={**ENV, "ORDERS_DB_PASSWORD": "rotated"})
    assert report.updated == ["connection:orders-db"]


def test_missing_secret_reference_changes_nothing(store):
    _apply()
    before = _counts()
    # The reference itself changed: there is no stored secret it may stand for.
    changed = POLICY.replace("- name: no-ddl", "- name: no-ddl-renamed").replace(
        "${env:ORDERS_DB_PASSWORD}", "${env:ORDERS_DB_PASSWORD_V2}")
    with pytest.raises(UnresolvedSecret, match="ORDERS_DB_PASSWORD_V2") as caught:
        _apply(changed, env={"BILLING_TOKEN": "bill-secret-123"})
    assert caught.value.path == ("connections", 1, "password")
    assert _counts() == before
    with session_scope() as s:
        assert s.scalars(select(Rule.name).order_by(Rule.position)).first() == "no-ddl"


def test_unchanged_reference_whose_variable_is_unset_keeps_the_stored_secret(store):
    _apply()
    changed = POLICY.replace("- name: no-ddl", "- name: no-ddl-renamed")
    report = _apply(changed, env={})
    assert "rule:no-ddl-renamed" in report.created
    assert not any(item.startswith("connection:") for item in report.created + report.updated + report.removed)
    assert len(report.kept) == 2 and "ORDERS_DB_PASSWORD is not set" in report.summary()
    with session_scope() as s:
        conn = s.scalars(select(Connection).where(Connection.name == "orders-db")).one()
        assert vault.decrypt(conn.secrets)["password"].reveal() == "pw-orders-456"
        api = s.scalars(select(Connection).where(Connection.name == "billing-api")).one()
        assert vault.decrypt(api.secrets)["header:Authorization"].reveal() == "Bearer bill-secret-123"
    # A value given again still replaces the stored one.
    assert _apply(env={**ENV, "ORDERS_DB_PASSWORD": "rotated"}).updated == ["connection:orders-db"]


def test_a_new_connection_needs_its_secret(store):
    with pytest.raises(UnresolvedSecret, match="BILLING_TOKEN"):
        _apply(env={"ORDERS_DB_PASSWORD": "x"})
    assert _counts()["Connection"] == 0


def test_removed_entries_are_pruned_and_versions_move(store):
    _apply()
    smaller = POLICY.replace("""  - {service_account: etl-agent, connection: billing-api, expires: "2030-01-31T00:00:00Z"}\n""", "")
    smaller = smaller.replace("""  - name: report-bot\n""", "")
    report = _apply(smaller)
    assert "grant:etl-agent->billing-api" in report.removed
    assert "service_account:report-bot" in report.removed
    with session_scope() as s:
        bot = s.scalars(select(ServiceAccount).where(ServiceAccount.name == "report-bot")).one()
        assert bot.disabled
        grant = s.scalars(select(Grant).join(Grant.connection).where(Connection.name == "billing-api")).one()
        assert grant.revoked_at is not None and grant.revoked_by == "test"
        assert s.get(StoreVersion, "policy").version == 2
    # Applying the full file again restores them.
    report = _apply()
    assert "grant:etl-agent->billing-api" in report.updated
    with session_scope() as s:
        assert not s.scalars(select(ServiceAccount).where(ServiceAccount.name == "report-bot")).one().disabled


def test_rule_order_follows_the_file(store):
    _apply()
    reordered = POLICY.replace("  - name: no-ddl\n    match: {protocol: [postgres, mysql], kind: [ddl]}\n    action: deny\n    message: \"DDL is not allowed through the gateway\"\n", "")
    reordered = reordered.replace("campaigns:", "  - name: no-ddl\n    match: {protocol: [postgres, mysql], kind: [ddl]}\n    action: deny\ncampaigns:")
    report = _apply(reordered)
    assert "rule:no-ddl" in report.updated
    with session_scope() as s:
        assert list(s.scalars(select(Rule.name).order_by(Rule.position))) == ["writes-need-dba", "mask-pii", "no-ddl"]


def test_defaults_are_stored_per_connection_and_export_maps_back_to_no_change(store):
    from app.inventory import export_policy, placeholder_environ
    from app.snapshot import load_snapshot

    text = POLICY.replace("version: 1\n", "version: 1\ndefault: review\n", 1)
    text = text.replace("    owner: alice@example.com\n", "    owner: alice@example.com\n    default: deny\n", 1)
    _apply(text)
    with session_scope() as s:
        configs = {c.name: c.config for c in s.scalars(select(Connection))}
    assert configs["orders-db"]["default"] == "review" and configs["billing-api"]["default"] == "deny"
    policy = load_snapshot().policy
    assert policy.defaults["orders-db"].action == "review" and policy.defaults["orders-db"].approvers == ("dba",)
    assert policy.defaults["billing-api"].action == "deny"
    with session_scope() as s:
        doc, env = export_policy(s), placeholder_environ(s)
    assert {c.name: c.default for c in doc.connections} == {"billing-api": "deny", "orders-db": "review"}
    with session_scope() as s:
        assert not apply_policy(s, doc, actor="test", environ=env).changed
    # Back to no default at all: allow, and nothing stored for it.
    _apply()
    with session_scope() as s:
        assert all("default" not in c.config for c in s.scalars(select(Connection)))
