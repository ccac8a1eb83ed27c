"""load_policy / dump_policy: the example loads, every mistake names its line and field."""
from __future__ import annotations

import json
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.policy import (PolicyDocument, PolicyError, Rule, cron_to_apscheduler, document_from_dict, dump_policy,
                        load_policy, parse_duration, parse_timestamp, secret_refs)
from app.policy.values import parse_cron

# The example of the policy format as specified, verbatim.
EXAMPLE = r"""version: 1
service_accounts:
  - name: etl-agent
    groups: [etl]
    oidc: {issuer: "https://idp.example.com", subject: "etl-agent-client"}
users:                      # local portal users; OIDC users are created on first login
  - email: alice@example.com
    groups: [dba]
    roles: [approver]       # admin | approver | auditor
connections:
  - name: billing-api
    type: http
    hosts: ["api.billing.example.com"]
    inject: {headers: {Authorization: "Bearer ${env:BILLING_TOKEN}"}}
    owner: alice@example.com
  - name: orders-db
    type: postgres          # or mysql
    address: 127.0.0.1:5432
    database: orders
    username: orders_rw
    password: "${env:ORDERS_DB_PASSWORD}"
    owner: "group:dba"
  - name: web-1
    type: ssh
    address: 10.0.0.5:22
    username: deploy
    private_key: "${file:/etc/airlock/keys/deploy}"
    host_key: "ssh-ed25519 AAAA..."
    owner: "group:ops"
grants:
  - {service_account: etl-agent, connection: orders-db}
  - {service_account: etl-agent, connection: billing-api, expires: "2027-01-31T00:00:00Z"}
rules:
  - name: no-ddl
    match: {protocol: [postgres, mysql], kind: [ddl]}
    action: deny
    message: "DDL is not allowed through the gateway"
  - name: writes-need-dba
    match: {connection: orders-db, kind: [write]}
    action: review
    approvers: {groups: [dba], count: 1}
    hold: 60s
  - name: refunds-need-two
    match: {protocol: http, method: [POST], path: "/v1/refunds*"}
    action: review
    approvers: {groups: [finance], count: 2}
  - name: no-rm-rf
    match: {protocol: ssh, command: "regex:rm\\s+-\\w*r\\w*f"}
    action: deny
  - name: mask-pii
    match: {connection: "*"}
    action: mask
    fields: [email, ssn, card_number]
    detectors: [email, credit_card, ssn]
    strategy: partial
campaigns:
  - name: quarterly-db-review
    scope: {connections: [orders-db]}
    reviewers: owner        # or "group:NAME"
    schedule: "0 9 1 */3 *"
    duration: 14d
    remind_every: 3d
    on_deadline: revoke     # revoke | keep | escalate
"""

BASE = """\
version: 1
service_accounts:
  - name: etl-agent
    groups: [etl]
connections:
  - name: orders-db
    type: postgres
    address: 127.0.0.1
    username: orders_rw
    owner: "group:dba"
"""  # 10 lines: whatever a test appends starts on line 11 (a connection, or a new top-level key)


def errors_of(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(PolicyError) as info:
        load_policy(text)
    return [(e.line, e.path, e.message) for e in info.value.errors]


def one_error(text: str) -> tuple[int, str, str]:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


def test_example_loads() -> None:
    doc = load_policy(EXAMPLE)
    assert [c.name for c in doc.connections] == ["billing-api", "orders-db", "web-1"]
    assert doc.connections[0].inject_headers == (("Authorization", "Bearer ${env:BILLING_TOKEN}"),)
    assert doc.connections[1].password == "${env:ORDERS_DB_PASSWORD}"
    assert doc.grants[1].expires == datetime(2027, 1, 31, tzinfo=timezone.utc)
    review = doc.rules[1]
    assert (review.action, review.approvers.groups, review.hold) == ("review", ("dba",), 60)  # type: ignore[union-attr]
    assert doc.rules[3].match.command == (r"regex:rm\s+-\w*r\w*f",)
    assert doc.rules[4].strategy == "partial" and doc.rules[4].detectors == ("email", "credit_card", "ssn")
    camp = doc.campaigns[0]
    assert (camp.duration, camp.remind_every, camp.connections) == (14 * 86400, 3 * 86400, ("orders-db",))
    assert doc.users[0].roles == ("approver",)


def test_default_port_is_filled_in() -> None:
    assert load_policy(BASE).connections[0].address == "127.0.0.1:5432"


def test_error_format_names_source_line_and_field() -> None:
    text = BASE + textwrap.dedent("""\
        rules:
          - name: a
            match: {}
            action: allow
          - name: writes
            match: {kind: write}
            action: review
            approvers:
              groups: [dba]
              count: 0
        """)
    with pytest.raises(PolicyError) as info:
        load_policy(text, source="prod.yaml")
    assert str(info.value) == "prod.yaml:20: rules[1].approvers.count: must be a positive integer"


CASES = [
    # (text appended to BASE, line, path, message fragment)
    ("rulez: []\n", 11, "rulez", "did you mean 'rules'"),
    ("rules:\n  - name: r\n    match: {}\n    action: review\n    aprovers: {groups: [a]}\n",
     15, "rules[0].aprovers", "did you mean 'approvers'"),
    ("rules:\n  - name: r\n    match: {}\n    action: permit\n", 14, "rules[0].action", "must be one of allow, deny"),
    ("rules:\n  - name: r\n    match: {}\n    action: review\n", 12, "rules[0].approvers", "is required"),
    ("rules:\n  - name: r\n    match: {}\n    action: review\n    approvers: {count: 2}\n",
     15, "rules[0].approvers.groups", "is required"),
    ("rules:\n  - name: r\n    match: {}\n    action: mask\n    fields: [a]\n    strategy: blur\n",
     16, "rules[0].strategy", "must be one of redact, partial, hash"),
    ("rules:\n  - name: r\n    match: {}\n    action: mask\n    detectors: [emial]\n",
     15, "rules[0].detectors[0]", "did you mean 'email'"),
    ("rules:\n  - name: r\n    match: {}\n    action: mask\n", 12, "rules[0]", "needs fields or detectors"),
    ("rules:\n  - name: r\n    match: {path: 'regex:(unclosed'}\n    action: deny\n",
     13, "rules[0].match.path", "invalid regex"),
    ("rules:\n  - name: r\n    match: {}\n    action: review\n    approvers: {groups: [a]}\n    hold: 10x\n",
     16, "rules[0].hold", "must be a duration"),
    ("rules:\n  - name: r\n    match: {}\n    action: review\n    approvers: {groups: [a]}\n    expires_after: 0\n",
     16, "rules[0].expires_after", "longer than zero"),
    ("rules:\n  - name: r\n    match: {}\n    action: deny\n    strategy: hash\n",
     15, "rules[0].strategy", "only valid with action: mask"),
    ("rules:\n  - name: r\n    match: {}\n    action: allow\n    hold: 5s\n",
     15, "rules[0].hold", "only valid with action: review"),
    ("rules:\n  - name: r\n    match: {method: PSOT}\n    action: deny\n",
     13, "rules[0].match.method", "did you mean 'POST'"),
    ("rules:\n  - name: r\n    match: {kind: [read, dll]}\n    action: deny\n",
     13, "rules[0].match.kind[1]", "did you mean 'ddl'"),
    ("rules:\n  - name: r\n    match: {protocol: postgre}\n    action: deny\n",
     13, "rules[0].match.protocol", "did you mean 'postgres'"),
    ("rules:\n  - name: r\n    match: {identity: x, service_account: y}\n    action: deny\n",
     13, "rules[0].match.identity", "either identity or service_account"),
    ("rules:\n  - name: r\n    match:\n      time: {days: [mon-fry]}\n    action: deny\n",
     14, "rules[0].match.time.days", "unknown day 'fry'"),
    ("rules:\n  - name: r\n    match:\n      time: {between: '9-17'}\n    action: deny\n",
     14, "rules[0].match.time.between", "not a time of day"),
    ("rules:\n  - name: r\n    match:\n      time: {days: [mon], tz: Mars/Olympus}\n    action: deny\n",
     14, "rules[0].match.time.tz", "unknown time zone"),
    ("rules:\n  - name: r\n    match:\n      time: {tz: UTC}\n    action: deny\n",
     14, "rules[0].match.time", "needs days or between"),
    ("rules:\n  - name: r\n    match:\n      body: {amount: 5}\n    action: deny\n",
     14, 'rules[0].match.body.amount', "must be a JSON path"),
    ("rules:\n  - name: r\n    match: {connection: nope-db}\n    action: deny\n",
     13, "rules[0].match.connection", "unknown connection 'nope-db'"),
    ("rules:\n  - name: r\n    match: {identity: [etl-agent, ghost]}\n    action: deny\n",
     13, "rules[0].match.identity[1]", "unknown service account 'ghost'"),
    ("rules:\n  - name: no-grant\n    match: {}\n    action: deny\n", 12, "rules[0].name", "reserved"),
    ("rules:\n  - name: r\n    match: []\n    action: deny\n", 13, "rules[0].match", "must be a mapping"),
    ("rules:\n  - name: r\n    match: {}\n    action: deny\n  - name: r\n    match: {}\n    action: allow\n",
     15, "rules[1].name", "duplicate name 'r' (first at line 12)"),
    ("users:\n  - email: a@x.io\n    roles: [approver, superuser]\n",
     13, "users[0].roles[1]", "unknown role 'superuser'"),
    ("users:\n  - email: A@x.io\n  - email: a@X.io\n", 13, "users[1].email", "duplicate email"),
    ("users:\n  - email: not-an-email\n", 12, "users[0].email", "not an email address"),
    ("grants:\n  - {service_account: ghost, connection: orders-db}\n",
     12, "grants[0].service_account", "unknown service account 'ghost'"),
    ("grants:\n  - {service_account: etl-agent, connection: orders-db, expires: next tuesday}\n",
     12, "grants[0].expires", "ISO 8601"),
]


@pytest.mark.parametrize("extra, line, path, fragment", CASES, ids=[c[2] + ":" + c[3][:20] for c in CASES])
def test_each_mistake_names_line_and_path(extra: str, line: int, path: str, fragment: str) -> None:
    errors = errors_of(BASE + extra)
    assert [(l, p) for l, p, m in errors if fragment in m] == [(line, path)], errors


CONNECTION_CASES = [
    ("  - name: api\n    type: http\n    owner: a@x.io\n", 11, "connections[1].hosts", "is required for a http"),
    ("  - name: db2\n    type: postgre\n    address: h:1\n    username: u\n",
     12, "connections[1].type", "did you mean 'postgres'"),
    ("  - name: db2\n    type: mysql\n    address: h\n", 11, "connections[1].username", "is required for a mysql"),
    ("  - name: db2\n    type: mysql\n    address: h\n    username: u\n    hosts: [x]\n",
     15, "connections[1].hosts", "not valid for a mysql connection"),
    ("  - name: db2\n    type: mysql\n    address: 'h:99999'\n    username: u\n",
     13, "connections[1].address", "must be host:port"),
    ("  - name: box\n    type: ssh\n    address: h\n    username: u\n    private_key: k\n",
     11, "connections[1].host_key", "is required for a ssh"),
    ("  - name: box\n    type: ssh\n    address: h\n    username: u\n    host_key: ssh-ed25519 AAAA\n",
     11, "connections[1]", "needs private_key or password"),
    ("  - name: box\n    type: ssh\n    address: h\n    username: u\n    password: p\n    host_key: AAAA\n",
     16, "connections[1].host_key", "OpenSSH key"),
    ("  - name: db2\n    type: mysql\n    address: h\n    username: u\n    password: '${env:1BAD}'\n",
     15, "connections[1].password", "bad environment variable name"),
    ("  - name: db2\n    type: mysql\n    address: h\n    username: u\n    password: '${vault:x}'\n",
     15, "connections[1].password", "bad secret reference"),
    ("  - name: api\n    type: http\n    hosts: [a.io]\n    inject: {headers: {X-Key: '${env:KEY'}}\n",
     14, 'connections[1].inject.headers.X-Key', "bad secret reference"),
    ("  - name: api\n    type: http\n    hosts: ['a b']\n", 13, "connections[1].hosts[0]", "not a host name"),
    ("  - name: orders-db\n    type: http\n    hosts: [a.io]\n", 11, "connections[1].name", "duplicate name"),
    ("  - name: 'bad name'\n    type: http\n    hosts: [a.io]\n", 11, "connections[1].name", "letters, digits"),
    ("  - name: api\n    type: http\n    hosts: [a.io]\n    owner: bob\n",
     14, "connections[1].owner", "email or group:NAME"),
    ("  - name: api\n    type: http\n    hosts: [A.io]\n  - name: api2\n    type: http\n    hosts: [a.io]\n",
     16, "connections[2].hosts[0]", "already used by connection 'api'"),
    ("  - name: db2\n    type: mysql\n    addres: h\n    username: u\n",
     13, "connections[1].addres", "did you mean 'address'"),
]


@pytest.mark.parametrize("extra, line, path, fragment", CONNECTION_CASES, ids=[c[2] + ":" + c[3][:20] for c in CONNECTION_CASES])
def test_connection_mistakes(extra: str, line: int, path: str, fragment: str) -> None:
    errors = errors_of(BASE + extra)  # extra is a second connection, from line 11
    assert [(l, p) for l, p, m in errors if fragment in m] == [(line, path)], errors


CAMPAIGN = "campaigns:\n  - name: c\n    schedule: '{schedule}'\n{extra}"


@pytest.mark.parametrize("schedule, extra, line, path, fragment", [
    ("0 9 1 *", "", 13, "campaigns[0].schedule", "5 fields"),
    ("60 9 * * *", "", 13, "campaigns[0].schedule", "minute: 60 is outside 0-59"),
    ("0 9 * * mon-sun", "", 13, "campaigns[0].schedule", "runs backwards"),
    ("0 9 * * *", "    duration: 1d\n    remind_every: 2d\n", 15, "campaigns[0].remind_every", "shorter than duration"),
    ("0 9 * * *", "    reviewers: everyone\n", 14, "campaigns[0].reviewers", "owner or group:NAME"),
    ("0 9 * * *", "    on_deadline: delete\n", 14, "campaigns[0].on_deadline", "revoke, keep, escalate"),
    ("0 9 * * *", "    scope: {connections: [ghost]}\n", 14, "campaigns[0].scope.connections[0]", "unknown connection"),
    ("0 9 * * *", "    escalate_to: 'group:sec'\n", 14, "campaigns[0].escalate_to", "only valid with on_deadline"),
])
def test_campaign_mistakes(schedule: str, extra: str, line: int, path: str, fragment: str) -> None:
    errors = errors_of(BASE + CAMPAIGN.format(schedule=schedule, extra=extra))
    assert [(l, p) for l, p, m in errors if fragment in m] == [(line, path)], errors


def test_owner_reviewers_need_an_owner() -> None:
    text = BASE.replace('    owner: "group:dba"\n', "") + CAMPAIGN.format(schedule="0 9 * * *", extra="")
    assert one_error(text) == (11, "campaigns[0].reviewers", "is owner, but connection 'orders-db' has no owner")


def test_all_errors_are_collected_in_line_order() -> None:
    text = "version: 2\nrulez: []\nusers:\n  - email: nope\n    roles: [god]\n"
    assert [(l, p) for l, p, _ in errors_of(text)] == [
        (1, "version"), (2, "rulez"), (4, "users[0].email"), (5, "users[0].roles[0]")]


@pytest.mark.parametrize("text, line, fragment", [
    ("", 1, "policy is empty"),
    ("version: 1\nrules: [\n", 3, "invalid YAML"),
    ("version: 1\nversion: 1\n", 2, "duplicate key"),
    ("version: 1\n1: x\n", 2, "must be a string"),
    ("rules: []\n", 1, "is required"),
    ("- 1\n", 1, "must be a mapping"),
    ("version: 1\nrules: {}\n", 2, "must be a list"),
    ("version: 1\nx: !!python/object:os.system x\n", 2, "unsupported value"),
])
def test_document_level_mistakes(text: str, line: int, fragment: str) -> None:
    errors = errors_of(text)
    assert [l for l, _, m in errors if fragment in m] == [line], errors


def test_globs_in_references_are_not_checked_but_exact_names_are() -> None:
    text = BASE + "rules:\n  - name: r\n    match: {connection: ['orders-*', 'regex:^x', orders-db]}\n    action: deny\n"
    assert load_policy(text).rules[0].match.connection == ("orders-*", "regex:^x", "orders-db")


def test_yaml_merge_keys_work() -> None:
    text = BASE + textwrap.dedent("""\
        rules:
          - &base {name: a, match: {kind: write}, action: review, approvers: {groups: [dba]}}
          - <<: *base
            name: b
            hold: 5m
        """)
    rules = load_policy(text).rules
    assert (rules[1].name, rules[1].hold, rules[1].match.kind) == ("b", 300, ("write",))


FULL = BASE + textwrap.dedent("""\
      - name: api
        type: http
        hosts: ["api.example.com", "*.api.example.com:8443"]
        inject: {headers: {X-Key: "${file:/run/key}"}, query: {token: "${env:T}"}}
    grants:
      - {service_account: etl-agent, connection: api, expires: 2027-01-31}
    users:
      - {email: bob@x.io, name: Bob, groups: [dba, finance], roles: [admin, auditor]}
    rules:
      - name: everything
        description: every key at once
        enabled: false
        match:
          protocol: http
          connection: [api, "o*"]
          identity: etl-agent
          groups: [oncall]
          kind: [write]
          method: [POST, "P*"]
          host: "*.example.com"
          path: "regex:^/v1/"
          command: "rm *"
          targets: [users, "regex:^audit"]
          attributes: [unbounded]
          time: {days: [mon-fri, sun], between: "22:00-06:00", tz: Europe/Paris}
          body: {"$.amount": [100, "2*"], "$.items[*].sku": "X-*", "$.ok": true, "$.none": null}
        action: review
        message: "needs two"
        approvers: {groups: [finance], count: 2}
        hold: 0
        expires_after: 90m
        slack: false
        channel: "#approvals"
      - {name: m, match: {}, action: mask, fields: [email], strategy: hash}
    campaigns:
      - name: c
        description: quarterly
        enabled: false
        scope: {connections: ["*"], service_accounts: [etl-agent]}
        reviewers: "group:sec"
        schedule: "*/15 9-17 * jan,jul 1-5"
        duration: 36h
        on_deadline: escalate
        escalate_to: "group:ciso"
        unused_after: 7d
    """)


def test_every_key_round_trips_through_dump() -> None:
    doc = load_policy(FULL)
    rule = doc.rules[0]
    assert rule.match.service_account == ("etl-agent",) and rule.match.tables == ("users", "regex:^audit")
    assert rule.match.time is not None and rule.match.time.days == ("mon", "tue", "wed", "thu", "fri", "sun")
    assert rule.match.time.between == (22 * 60, 6 * 60)
    assert dict(rule.match.body)["$.amount"] == ("100", "2*") and dict(rule.match.body)["$.ok"] == ("true",)
    assert (rule.hold, rule.expires_after, rule.slack, rule.enabled) == (0, 5400, False, False)
    assert doc.campaigns[0].duration == 36 * 3600
    again = load_policy(dump_policy(doc))
    assert again == doc
    assert load_policy(dump_policy(load_policy(EXAMPLE))) == load_policy(EXAMPLE)


def test_rule_dict_survives_json_and_from_dict() -> None:
    for rule in load_policy(FULL).rules + load_policy(EXAMPLE).rules:
        assert Rule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule


def test_document_from_dict_matches_yaml() -> None:
    doc = load_policy(EXAMPLE)
    assert document_from_dict(json.loads(json.dumps(doc.to_dict()))) == doc


def test_rule_from_dict_reports_problems_without_lines() -> None:
    with pytest.raises(PolicyError) as info:
        Rule.from_dict({"name": "r", "match": {"kind": "nope"}, "action": "review"})
    assert [(e.line, e.path) for e in info.value.errors] == [(0, "approvers"), (0, "match.kind")]
    assert str(info.value).startswith("rule: approvers: is required")


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("5m", 300), ("1h", 3600), ("14d", 1209600), (90, 90),
                                           ("1h30m", 5400), ("120", 120), (" 2H ", 7200)])
def test_parse_duration(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "1w", "-5s", -1, True, 1.5, None, "5 m", "m", "1.5h"])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_timestamps_are_utc() -> None:
    assert parse_timestamp("2027-01-31T01:00:00+01:00") == datetime(2027, 1, 31, tzinfo=timezone.utc)
    assert parse_timestamp("2027-01-31") == datetime(2027, 1, 31, tzinfo=timezone.utc)
    assert parse_timestamp("2027-01-31T00:00:00").tzinfo == timezone.utc


def test_cron_weekdays_are_crontab_numbered_for_apscheduler() -> None:
    from apscheduler.triggers.cron import CronTrigger

    assert parse_cron("0 9 * * 7")[4] == {0}
    kwargs = cron_to_apscheduler("0 9 * * 0")
    assert kwargs["day_of_week"] == "sun"
    trigger = CronTrigger(timezone="UTC", **kwargs)
    fire = trigger.get_next_fire_time(None, datetime(2026, 11, 27, tzinfo=timezone.utc))
    assert fire is not None and fire.strftime("%a %H:%M") == "Sun 09:00"
    assert cron_to_apscheduler("0 9 * * */2")["day_of_week"] == "sun,tue,thu,sat"


def test_secret_refs_are_listed() -> None:
    assert secret_refs("Bearer ${env:A} ${file:/k}") == [("env", "A"), ("file", "/k")]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_loads_or_raises_policy_error(text: str) -> None:
    try:
        assert isinstance(load_policy(text), PolicyDocument)
    except PolicyError as exc:
        assert exc.errors and all(e.line >= 0 for e in exc.errors)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["name", "match", "action", "approvers", "kind", "body", "time", "fields",
                                         "groups", "count", "x"]), inner, max_size=5), max_leaves=20))
def test_rule_from_any_dict_validates_or_raises_policy_error(data: object) -> None:
    try:
        Rule.from_dict(data)  # type: ignore[arg-type]
    except PolicyError as exc:
        assert exc.errors


def test_yaml_examples_in_the_reference_load() -> None:
    doc_text = (Path(__file__).parents[2] / "docs" / "policy.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc_text.split("```yaml\n")[1:]]
    assert len(blocks) >= 3
    assert load_policy(blocks[0]) == load_policy(EXAMPLE.replace("AAAA...", "AAAAC3NzaC1lZDI1NTE5AAAA..."))
    for block in blocks[1:]:  # whole files as they are; match fragments wrapped in a rule
        if block.startswith("version:"):
            load_policy(block)
            continue
        rule = "\n".join("    " + line for line in block.splitlines())
        load_policy(f"version: 1\nrules:\n  - name: r\n    action: deny\n{rule}\n")


free_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=15).filter(
    lambda s: s.strip() != "" and "${" not in s)
patterns = free_text.filter(lambda s: not s.startswith("regex:")) | st.sampled_from(["regex:^a+$", "a*", "[!x]?"])
rule_dicts = st.fixed_dictionaries(
    {"name": st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,12}\Z"), "action": st.sampled_from(["deny", "allow"]),
     "match": st.fixed_dictionaries({}, optional={
         "path": st.lists(patterns, min_size=1, max_size=3), "command": patterns,
         "groups": st.lists(free_text, min_size=1, max_size=2), "attributes": patterns,
         "body": st.dictionaries(st.sampled_from(["$.a", "$.b[0]", "$.c[*].d"]),
                                 st.one_of(st.integers(), st.booleans(), st.none(), patterns), min_size=1),
         "time": st.fixed_dictionaries({"days": st.lists(st.sampled_from(["mon", "sat-tue", "sun"]), min_size=1)},
                                       optional={"tz": st.sampled_from(["UTC", "America/New_York"])})})},
    optional={"message": st.text(max_size=20).filter(lambda s: "${" not in s), "enabled": st.booleans(),
              "description": st.text(max_size=20)})


@settings(max_examples=200, deadline=None)
@given(rule_dicts)
def test_random_rules_round_trip_through_json_and_yaml(data: dict) -> None:
    rule = Rule.from_dict(data)
    assert Rule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    doc = PolicyDocument(rules=(rule,))
    assert load_policy(dump_policy(doc)) == doc


def test_line_separator_characters_survive_dump() -> None:
    rule = Rule.from_dict({"name": "r", "action": "deny", "match": {"command": ["0\x85", "a\u2028b\r"]}})
    doc = PolicyDocument(rules=(rule,))
    assert load_policy(dump_policy(doc)).rules[0].match.command == ("0\x85", "a\u2028b\r")
