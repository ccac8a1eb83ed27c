"""Campaign runs over a real store (SQLite and PostgreSQL), time driven by `now=`."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select

from app import audit
from app.campaigns import decisions, jobs, lifecycle, report, runs
from app.campaigns.runs import CampaignError
from app.campaigns.usage import last_used
from app.db import session_scope
from app.models import AuditEntry, CampaignItem, CampaignRun, Grant, StoreVersion
from app.policy import load_policy
from tests.integration.campaigns import world as w
from tests.integration.campaigns.world import T0


@pytest.fixture
def seeded(store):
    w.build()
    now = T0
    # reader: only SELECTs, 5 days ago; a denied write does not count as use.
    w.session("reader", "db", now - timedelta(days=5), [w.stmt("select 1", "SELECT"), w.stmt("begin", "BEGIN"),
                                                        w.stmt("select * from t", "SELECT"), w.deny("delete from t")])
    # writer: reads and writes 2 days ago, and a session before its grant existed (not counted).
    w.session("writer", "db", now - timedelta(days=2), [w.stmt("select 1", "SELECT"),
                                                        w.stmt("insert into t values (1)", "INSERT")])
    w.session("writer", "db", now - timedelta(days=300), [w.stmt("drop table t", "DROP")])
    # idle: only denied attempts in 90 days.
    w.session("idle", "db", now - timedelta(days=10), [w.deny("update t set a=1")])
    # stale: last used 45 days ago over HTTP.
    w.session("stale", "api", now - timedelta(days=45), [("decision", {
        "action": "allow", "status": None, "rule": None, "kind": "read",
        "operation": "GET https://api.example.test/v1/x"})], protocol="http")
    return now


def items_by_sa(run_id: int) -> dict[str, CampaignItem]:
    with session_scope() as s:
        return {i.service_account: i for i in s.scalars(select(CampaignItem).where(CampaignItem.run_id == run_id))}


def test_on_demand_run_has_usage_and_suggestions(seeded):
    with session_scope() as s:
        run_id = runs.start_by_name(s, "quarterly", actor="admin@example.com", now=seeded).id
    items = items_by_sa(run_id)
    assert set(items) == {"reader", "writer", "idle", "fresh", "stale"}
    reader, writer, idle, fresh, stale = (items[k] for k in ("reader", "writer", "idle", "fresh", "stale"))
    assert reader.usage["ops"] == {"read": 2, "tcl": 1} and reader.usage["denials"] == 1
    assert reader.usage["sessions"] == 1
    assert reader.suggestion == "narrow" and "only reads" in reader.suggestion_reason
    doc = yaml.safe_load(w.POLICY)
    doc["rules"] = yaml.safe_load(reader.policy_change)["rules"]
    rule = load_policy(yaml.safe_dump(doc)).rules[0]  # the ready policy change loads as it is
    assert rule.action == "deny" and set(rule.match.kind) >= {"write", "ddl"}
    assert writer.usage["ops"] == {"read": 1, "write": 1}  # the DROP before the grant is not this grant's
    assert writer.suggestion == "keep"
    assert idle.usage["ops"] == {} and idle.usage["denials"] == 1 and idle.usage["last_used"] is None
    assert idle.suggestion == "revoke" and "never used" in idle.suggestion_reason
    assert fresh.suggestion == "keep" and "too new" in fresh.suggestion_reason
    assert stale.usage["ops"] == {"GET": 1}
    assert stale.suggestion == "revoke" and "unused for 44 days" in stale.suggestion_reason  # 45 days less the op's 1 s
    assert reader.reviewer == "owner@example.com" and stale.reviewer == "group:web"
    with session_scope() as s:
        assert runs.get_campaign(s, "quarterly").runs[0].started_by == "admin@example.com"
        with pytest.raises(CampaignError, match="already has an open run"):
            runs.start_by_name(s, "quarterly", actor="admin@example.com", now=seeded)


def test_last_used_is_one_definition(seeded):
    with session_scope() as s:
        grants = {g.service_account.name: g for g in s.scalars(select(Grant))}
        assert last_used(s, grants["idle"], seeded) is None  # a denied attempt is not use
        assert last_used(s, grants["reader"], seeded) == seeded - timedelta(days=5) + timedelta(seconds=3)
        assert last_used(s, grants["writer"], seeded) == seeded - timedelta(days=2) + timedelta(seconds=2)
        from app.portal.dashboard import unused_grants

        unused = {u["service_account"] for u in unused_grants(s, seeded)}
    assert unused == {"idle", "stale"}


def _quarterly_runs() -> int:
    with session_scope() as s:
        return len(runs.get_campaign(s, "quarterly").runs)


def test_cron_start_coalesces_missed_runs(seeded):
    # quarterly fires 09:00 on the 1st of Jan/Apr/Jul/Oct; the store knew it for 400 days and it
    # never ran (no scheduler): the missed fire times start one run, now.
    jobs.campaigns_tick(now=seeded)
    with session_scope() as s:
        run = runs.latest_run(s, runs.get_campaign(s, "quarterly"))
        assert run.started_by == "schedule" and run.started_at == seeded
    assert _quarterly_runs() == 1
    jobs.campaigns_tick(now=seeded + timedelta(minutes=1))
    assert _quarterly_runs() == 1
    # After the run closed, the next fire time (1 July 09:00) starts the next one, not earlier.
    jobs.campaigns_tick(now=seeded + timedelta(days=9))
    jobs.campaigns_tick(now=T0.replace(month=7, day=1, hour=8, minute=59))
    assert _quarterly_runs() == 1
    jobs.campaigns_tick(now=T0.replace(month=7, day=1, hour=9, minute=0, second=30))
    assert _quarterly_runs() == 2


def _version() -> int:
    with session_scope() as s:
        return s.get(StoreVersion, "policy").version


def test_certify_needs_justification_and_revoke_takes_grant(seeded):
    with session_scope() as s:
        run_id = runs.start_by_name(s, "quarterly", actor="admin@example.com", now=seeded).id
    items = items_by_sa(run_id)
    with session_scope() as s, pytest.raises(CampaignError, match="justification"):
        decisions.decide(s, items["writer"].id, "certify", "owner@example.com", "  ")
    with session_scope() as s, pytest.raises(CampaignError, match="not a reviewer"):
        decisions.decide(s, items["writer"].id, "certify", "other@example.com", "needed")
    with session_scope() as s:
        decisions.decide(s, items["writer"].id, "certify", "owner@example.com", "nightly ETL")
    before = _version()
    with session_scope() as s:
        decisions.decide(s, items["idle"].id, "revoke", "owner@example.com")
    assert _version() > before
    with session_scope() as s:
        g = s.get(Grant, items["idle"].grant_id)
        assert g.revoked_at is not None and g.revoked_by == "owner@example.com"
        with pytest.raises(CampaignError, match="already revoked"):
            decisions.decide(s, items["idle"].id, "certify", "owner@example.com", "oops")
        actions = [e.action for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
    assert "campaign.certify" in actions and "campaign.revoke" in actions and "grant.revoke" in actions


def test_bulk_accept_suggestions(seeded):
    with session_scope() as s:
        run_id = runs.start_by_name(s, "quarterly", actor="admin@example.com", now=seeded).id
    items = items_by_sa(run_id)
    ids = [items[k].id for k in ("reader", "idle", "fresh")]
    with session_scope() as s:
        done = decisions.accept_suggestions(s, ids, "owner@example.com", now=seeded)
    assert done == {"revoked": 1, "certified": 2, "narrowed": 1, "skipped": 0}
    after = items_by_sa(run_id)
    assert after["idle"].status == "revoked" and after["reader"].status == "certified"
    assert after["reader"].justification.startswith("accepted suggestion: only reads")
    with session_scope() as s:
        from app.models import Rule

        assert s.scalars(select(Rule).where(Rule.name == "read-only-reader-db")).first() is not None


@pytest.mark.parametrize("campaign,outcome", [("quarterly", "revoked"), ("api-review", "kept")])
def test_deadline_revoke_and_keep(seeded, campaign, outcome):
    with session_scope() as s:
        run_id = runs.start_by_name(s, campaign, actor="admin@example.com", now=seeded).id
        deadline = s.get(CampaignRun, run_id).deadline
    assert jobs.campaigns_tick(now=deadline - timedelta(seconds=1))[f"deadline_{outcome}"] == 0
    jobs.campaigns_tick(now=deadline)
    with session_scope() as s:
        run = s.get(CampaignRun, run_id)
        assert run.status == "closed"
        for item in run.items:
            assert item.status == outcome
            grant = s.get(Grant, item.grant_id)
            if outcome == "revoked":
                assert item.deadline_outcome == "revoked: no review" and grant.revoked_at is not None
            else:
                assert item.flagged and item.deadline_outcome == "kept: no review (flagged)"
                assert grant.revoked_at is None
        deadline_entries = s.scalars(select(AuditEntry).where(AuditEntry.action == "campaign.deadline")).all()
        assert len(deadline_entries) == len(run.items)
        assert audit.verify(s).ok


def test_escalation_then_deadline_escalate(seeded):
    with session_scope() as s:
        run_id = runs.start_by_name(s, "escalating", actor="admin@example.com", now=seeded).id
    item_id = items_by_sa(run_id)["idle"].id
    # Last quarter of 4 days: from day 3. Before it, nothing; in it, escalated to the campaign's group.
    assert jobs.campaigns_tick(now=seeded + timedelta(days=2, hours=23))["escalated"] == 0
    assert jobs.campaigns_tick(now=seeded + timedelta(days=3))["escalated"] == 1
    with session_scope() as s:
        item = s.get(CampaignItem, item_id)
        assert item.reviewer == "group:security" and item.escalated_from == "group:dba"
    # At the deadline: escalated again with a new short deadline; the security group may decide.
    out = jobs.campaigns_tick(now=seeded + timedelta(days=4))
    assert out["deadline_escalated"] == 1 and out["closed"] == 0
    with session_scope() as s:
        item = s.get(CampaignItem, item_id)
        assert item.due_at == seeded + timedelta(days=5) and item.deadline_outcome.startswith("escalated to group:security")
    # Nobody answers the escalation either: it fails closed.
    out = jobs.campaigns_tick(now=seeded + timedelta(days=5))
    assert out["deadline_revoked"] == 1
    with session_scope() as s:
        item = s.get(CampaignItem, item_id)
        assert item.status == "revoked" and item.deadline_outcome == "revoked: no review after escalation"
        assert s.get(Grant, item.grant_id).revoked_at is not None
        assert s.get(CampaignRun, run_id).status == "closed"


def test_escalated_item_decided_by_escalation_group(seeded):
    with session_scope() as s:
        run_id = runs.start_by_name(s, "escalating", actor="admin@example.com", now=seeded).id
    item_id = items_by_sa(run_id)["idle"].id
    with session_scope() as s, pytest.raises(CampaignError, match="not a reviewer"):
        decisions.decide(s, item_id, "certify", "sec@example.com", "x", now=seeded)
    jobs.campaigns_tick(now=seeded + timedelta(days=3))
    with session_scope() as s:
        decisions.decide(s, item_id, "certify", "sec@example.com", "still needed by the audit job",
                         now=seeded + timedelta(days=3))


def test_reminders_on_schedule(seeded):
    with session_scope() as s:
        run_id = runs.start_by_name(s, "quarterly", actor="admin@example.com", now=seeded).id
    with session_scope() as s:
        assert lifecycle.remind(s, seeded + timedelta(days=1)) == 0
    with session_scope() as s:
        assert lifecycle.remind(s, seeded + timedelta(days=2)) == 2  # owner@ and group:web
    with session_scope() as s:
        assert lifecycle.remind(s, seeded + timedelta(days=3)) == 0
        assert s.get(CampaignRun, run_id).last_reminded_at == seeded + timedelta(days=2)
        reminded = s.scalars(select(AuditEntry.data).where(AuditEntry.action == "campaign.remind")).all()
    assert sorted(d["reviewer"] for d in reminded) == ["group:web", "owner@example.com"]


def test_report_csv_and_json(seeded):
    with session_scope() as s:
        run_id = runs.start_by_name(s, "quarterly", actor="admin@example.com", now=seeded).id
    items = items_by_sa(run_id)
    with session_scope() as s:
        decisions.decide(s, items["writer"].id, "certify", "owner@example.com", "=cmd|' /C calc'!A0", now=seeded)
        decisions.decide(s, items["idle"].id, "revoke", "owner@example.com", now=seeded)
    jobs.campaigns_tick(now=seeded + timedelta(days=8))
    with session_scope() as s:
        run = report.run_for(s, "quarterly")
        as_json = json.loads(report.render(run, "json"))
        as_csv = list(csv.DictReader(io.StringIO(report.render(run, "csv"))))
    by = {r["service_account"]: r for r in as_json["items"]}
    assert by["writer"]["decision"] == "certified" and by["writer"]["decided_by"] == "owner@example.com"
    assert by["writer"]["ops"] == {"read": 1, "write": 1}
    assert by["idle"]["decision"] == "revoked" and by["idle"]["deadline_outcome"] == ""
    assert by["stale"]["decision"] == "revoked" and by["stale"]["deadline_outcome"] == "revoked: no review"
    assert by["reader"]["suggestion"] == "narrow"
    rows = {r["service_account"]: r for r in as_csv}
    assert rows["writer"]["justification"] == "'=cmd|' /C calc'!A0"  # stays text in a spreadsheet
    assert json.loads(rows["reader"]["ops"]) == {"read": 2, "tcl": 1}
    assert rows["stale"]["deadline_outcome"] == "revoked: no review"
    assert set(rows) == set(by)


def test_bulk_and_probe_usage_agree(seeded, monkeypatch):
    from app.campaigns import usage

    from app.models import SessionUsage

    with session_scope() as s:
        grants = [usage.GrantRef.of(g) for g in s.scalars(select(Grant))]
        from_events = {gid: u.to_dict() for gid, u in usage.usage_for(s, grants, seeded).items()}
        s.rollback()  # nothing summarised: the next reads come from the events again
    with session_scope() as s:
        monkeypatch.setattr(usage, "BULK_AT", 1)
        grants = [usage.GrantRef.of(g) for g in s.scalars(select(Grant))]
        bulk = {gid: u.to_dict() for gid, u in usage.usage_for(s, grants, seeded).items()}
    assert bulk == from_events
    assert jobs.usage_tick(now=seeded) == 0  # the campaign read already kept every ended session's summary
    with session_scope() as s:
        assert len(s.scalars(select(SessionUsage)).all()) == 4  # the sessions of the 90-day window
        monkeypatch.setattr(usage, "BULK_AT", 200)
        grants = [usage.GrantRef.of(g) for g in s.scalars(select(Grant))]
        from_summaries = {gid: u.to_dict() for gid, u in usage.usage_for(s, grants, seeded).items()}
    assert from_summaries == from_events
    assert sum(u["sessions"] for u in bulk.values()) == 3 and sum(u["denials"] for u in bulk.values()) == 2
