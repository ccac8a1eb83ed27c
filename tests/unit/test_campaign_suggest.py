"""The pure parts of access reviews: what an event says, and what to suggest."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from app.campaigns.suggest import read_only_rule, suggest
from app.campaigns.usage import Usage, event_effect

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
DAY = 86400


@pytest.mark.parametrize("protocol,kind,data,expected", [
    ("postgres", "output", '{"sql":"select 1","ms":0.1,"tag":"SELECT","rows":1}', ("op", "read")),
    ("postgres", "output", '{"sql":"insert into t values (1)","ms":0.1,"tag":"INSERT"}', ("op", "write")),
    ("postgres", "output", '{"sql":"drop table t","tag":"DROP"}', ("op", "ddl")),
    ("postgres", "output", '{"sql":"grant select on t to x","tag":"GRANT"}', ("op", "dcl")),
    ("postgres", "output", '{"sql":"begin","tag":"BEGIN"}', ("op", "tcl")),
    ("postgres", "output", '{"sql":"call p()","tag":"CALL"}', ("op", "exec")),
    ("postgres", "output", '{"sql": "update t set a = 1", "tag": "UPDATE"}', ("op", "write")),  # spaced JSON
    ("postgres", "output", '{"sql":"update t set a = 1","error":"42P01"}', ("op", "write")),  # no tag: the SQL
    ("postgres", "output", '{"sql":"select 1","not_run":true}', None),  # never reached the target
    ("postgres", "output", '{"fatal":"42501"}', None),
    ("postgres", "notice", '{"review_id":3}', None),
    ("postgres", "decision", json.dumps({"action": "deny", "kind": "ddl", "operation": "drop"}), ("denied", "")),
    ("postgres", "decision", json.dumps({"action": "allow", "status": "approved", "kind": "write"}), None),
    ("http", "decision", json.dumps({"action": "allow", "kind": "read", "operation": "GET https://a/b"}), ("op", "GET")),
    ("http", "decision", json.dumps({"action": "allow", "kind": "write", "operation": "post https://a/b"}),
     ("op", "POST")),
    ("http", "decision", json.dumps({"action": "deny", "kind": "write", "operation": "DELETE https://a/b"}),
     ("denied", "")),
    ("http", "decision", json.dumps({"action": "review", "status": "pending"}), None),
    ("http", "output", json.dumps({"flow": "1", "status": 403}), None),  # a response is not an operation
    ("ssh", "decision", json.dumps({"action": "allow", "kind": "exec", "operation": "ls"}), ("op", "exec")),
])
def test_event_effect(protocol, kind, data, expected):
    assert event_effect(protocol, kind, data) == expected


def _usage(last_days_ago=None, **ops):
    return Usage(since=NOW - timedelta(days=90), ops=ops,
                 last_used=None if last_days_ago is None else NOW - timedelta(days=last_days_ago))


def _suggest(u, granted_days_ago=200, protocol="postgres"):
    return suggest(u, service_account="sa", connection="db", protocol=protocol,
                   granted_at=NOW - timedelta(days=granted_days_ago), now=NOW, unused_after=30 * DAY, campaign="q")


def test_never_used_old_grant_is_revoked_young_one_kept():
    assert _suggest(_usage()).action == "revoke"
    assert _suggest(_usage()).reason == "never used in the 90 days since it was granted"
    assert _suggest(_usage(), granted_days_ago=45).reason == "never used in the 45 days since it was granted"
    young = _suggest(_usage(), granted_days_ago=3)
    assert young.action == "keep" and "too new" in young.reason


def test_unused_for_30_days_or_more_is_revoked():
    assert _suggest(_usage(30, read=5)).action == "revoke"
    assert _suggest(_usage(30, read=5)).reason == "unused for 30 days (last used 2026-05-02)"
    assert _suggest(_usage(29, write=5)).action == "keep"


def test_only_reads_suggests_read_only_with_a_ready_rule():
    advice = _suggest(_usage(2, read=40, tcl=8))
    assert advice.action == "narrow" and "48 operations, no writes" in advice.reason
    rule = yaml.safe_load(advice.policy_change)["rules"][0]
    assert rule["action"] == "deny" and rule["match"] == {
        "protocol": "postgres", "connection": "db", "service_account": "sa",
        "kind": ["write", "ddl", "dcl", "admin", "exec"]}
    assert _suggest(_usage(2, read=40, write=1)).action == "keep"
    assert _suggest(_usage(2, read=40, other=1)).action == "keep"  # unknown kinds are not reads
    http = _suggest(_usage(1, GET=9, HEAD=1), protocol="http")
    assert http.action == "narrow" and yaml.safe_load(http.policy_change)["rules"][0]["match"]["kind"] == ["write"]
    assert _suggest(_usage(1, GET=9, POST=1), protocol="http").action == "keep"


def test_the_rule_quotes_any_name():
    text = read_only_rule('we"ird: sa', "db #1", "postgres")
    match = yaml.safe_load(text)["rules"][0]["match"]
    assert match["service_account"] == 'we"ird: sa' and match["connection"] == "db #1"


def test_summary_line():
    u = _usage(1, read=412, write=3)
    u.sessions, u.denials, u.reviews = 2, 1, {"held": 1, "approved": 1}
    assert u.summary() == "412 read, 3 write; 2 sessions; 1 denial; 1 review in 90 days"
