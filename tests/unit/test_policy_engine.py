"""compile_policy / evaluate: grants, every match key, precedence, masks, time windows."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.policy import GrantSpec, Rule, ServiceAccountSpec, compile_policy, evaluate, load_policy
from app.types import MaskSpec, Operation, Principal, ReviewSpec

UTC = timezone.utc
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday
WHO = Principal("agent", groups=frozenset({"team"}))
GRANTS = [GrantSpec("agent", c) for c in ("db", "db2", "api", "box")]
PG = Operation("postgres", "db", "read", targets=("public.orders",))


def rule(name: str, action: str = "deny", **match: Any) -> Rule:
    extra: dict[str, Any] = {}
    if action == "review":
        extra["approvers"] = {"groups": ["dba"]}
    if action == "mask":
        extra["fields"] = [name]
    return Rule.from_dict({"name": name, "match": match, "action": action, **extra})


def verdict(rules: list[Rule], op: Operation = PG, who: Principal = WHO, now: datetime | None = NOW,
            sas: tuple[ServiceAccountSpec, ...] = ()):
    return evaluate(compile_policy(rules, GRANTS, sas), op, who, now)


def matches(op: Operation, who: Principal = WHO, now: datetime | None = NOW, **match: Any) -> bool:
    return verdict([rule("r", **match)], op, who, now).action == "deny"


# --- grants ------------------------------------------------------------------------------

def test_no_grant_denies_even_with_allow_rules() -> None:
    v = verdict([rule("ok", "allow")], Operation("postgres", "other", "read"))
    assert (v.action, v.rule) == ("deny", "no-grant")
    assert "'agent' has no grant for connection 'other'" in v.message
    assert verdict([rule("ok", "allow")], PG, Principal("stranger")).rule == "no-grant"


def test_expired_grant_denies_from_its_expiry() -> None:
    grants = [GrantSpec("agent", "db", expires=NOW)]
    policy = compile_policy([], grants)
    assert evaluate(policy, PG, WHO, NOW - timedelta(seconds=1)).action == "allow"
    late = evaluate(policy, PG, WHO, NOW)
    assert (late.action, late.rule) == ("deny", "no-grant") and "expired at 2026-11-27T12:00:00Z" in late.message
    assert evaluate(policy, PG, WHO, NOW.replace(tzinfo=None)).action == "deny"  # naive means UTC
    assert policy.has_grant("agent", "db", NOW - timedelta(1)) and not policy.has_grant("agent", "db", NOW)


def test_expired_grant_uses_the_clock_when_no_now_is_given() -> None:
    past = compile_policy([], [GrantSpec("agent", "db", expires=datetime.now(UTC) - timedelta(1))])
    future = compile_policy([], [GrantSpec("agent", "db", expires=datetime.now(UTC) + timedelta(1))])
    assert evaluate(past, PG, WHO).action == "deny" and evaluate(future, PG, WHO).action == "allow"


def test_a_standing_grant_outlives_an_expired_duplicate() -> None:
    grants = [GrantSpec("agent", "db", expires=NOW - timedelta(1)), GrantSpec("agent", "db")]
    assert evaluate(compile_policy([], grants), PG, WHO, NOW).action == "allow"
    grants = [GrantSpec("agent", "db", expires=NOW - timedelta(1)), GrantSpec("agent", "db", NOW + timedelta(1))]
    assert evaluate(compile_policy([], grants), PG, WHO, NOW).action == "allow"
    naive = [GrantSpec("agent", "db", expires=NOW.replace(tzinfo=None))]
    assert evaluate(compile_policy([], naive), PG, WHO, NOW).action == "deny"


def test_granted_with_no_rules_is_allowed() -> None:
    v = verdict([])
    assert (v.action, v.rule, v.masks) == ("allow", None, ())


# --- match keys --------------------------------------------------------------------------

def test_protocol_is_case_insensitive() -> None:
    assert matches(PG, protocol="POSTGRES") and matches(PG, protocol=["mysql", "post*"])
    assert not matches(PG, protocol="mysql")


def test_connection_exact_glob_regex() -> None:
    assert matches(PG, connection="db") and matches(PG, connection="d*") and matches(PG, connection="regex:^d")
    assert not matches(PG, connection="db2") and not matches(PG, connection="DB")
    assert matches(Operation("postgres", "db2", "read"), connection="db?")


def test_service_account_and_identity_alias() -> None:
    assert matches(PG, service_account="agent") and matches(PG, identity="ag*")
    assert not matches(PG, identity="other")


def test_groups_come_from_principal_and_policy() -> None:
    assert matches(PG, groups=["team"]) and not matches(PG, groups=["ops"])
    sas = (ServiceAccountSpec("agent", groups=("ops",)),)
    assert verdict([rule("r", groups="ops")], sas=sas).action == "deny"
    assert verdict([rule("r", groups="ops")], who=Principal("agent"), sas=sas).action == "deny"
    assert verdict([rule("r", groups="nobody")], sas=sas).action == "allow"


def test_kind_method_host_fold_case() -> None:
    http = Operation("http", "api", "write", method="post", host="API.Example.com", path="/v1/x")
    assert matches(http, kind="WRITE") and matches(http, method="POST") and matches(http, method="p*")
    assert matches(http, host="api.example.COM") and matches(http, host="*.example.com")
    assert not matches(http, method="GET") and not matches(http, host="other.com") and not matches(http, kind="read")
    assert not matches(PG, method="GET") and not matches(PG, host="*")  # absent values never match


def test_path_is_case_insensitive_and_nfkc_folded_by_default() -> None:
    # Issue 16, finding 12: many servers (IIS, case-insensitive file systems, some
    # routers) serve /ADMIN and /admin alike, and full-width letters as ASCII.
    http = Operation("http", "api", "write", method="POST", path="/v1/Refunds/7")
    assert matches(http, path="/v1/Refunds*") and matches(http, path="/v1/refunds*")
    assert matches(http, path="regex:/Refunds/\\d+$") and matches(http, path="regex:refunds")
    assert not matches(http, path="/v1") and not matches(http, path="/v1/refund/*")
    for spelling in ("/ADMIN/x", "/\uff21\uff24\uff2d\uff29\uff2e/x", "/adm\u0131n/x", "/Admin/x"):
        assert matches(Operation("http", "api", "read", method="GET", path=spelling), path="/admin/*"), spelling
    # Only HTTP paths are folded: an SSH or SQL path keeps its case.
    ssh = Operation("ssh", "box", "exec", command="cat", path="/etc/Passwd")
    assert not matches(ssh, path="/etc/passwd")


def test_a_connection_may_opt_out_of_path_folding() -> None:
    http = Operation("http", "api", "write", method="POST", path="/v1/Refunds/7")
    policy = compile_policy([rule("r", path="/v1/refunds*")], GRANTS, case_sensitive_paths=frozenset({"api"}))
    assert evaluate(policy, http, WHO, NOW).action == "allow"
    policy = compile_policy([rule("r", path="/v1/Refunds*")], GRANTS, case_sensitive_paths=frozenset({"api"}))
    assert evaluate(policy, http, WHO, NOW).action == "deny"
    policy = compile_policy([rule("r", path="regex:refunds")], GRANTS, case_sensitive_paths=frozenset({"api"}))
    assert evaluate(policy, http, WHO, NOW).action == "allow"
    loaded = load_policy("""
version: 1
connections:
  - {name: api, type: http, hosts: [api.example.com], path_case_sensitive: true}
""")
    assert loaded.connections[0].path_case_sensitive is True
    assert loaded.connections[0].to_dict()["path_case_sensitive"] is True


def test_glob_is_anchored_and_regex_searches() -> None:
    ssh = Operation("ssh", "box", "exec", command="sudo rm -rf /")
    assert not matches(ssh, command="rm *") and matches(ssh, command="*rm *")
    assert matches(ssh, command=r"regex:rm\s+-\w*r\w*f") and not matches(ssh, command="regex:^rm")


def test_command_falls_back_to_text_for_shell_input() -> None:
    shell = Operation("ssh", "box", "shell", text="rm -rf /tmp/x")
    assert matches(shell, command="rm -rf *")
    assert not matches(Operation("ssh", "box", "shell", command="ls", text="rm -rf /"), command="rm *")


def test_tables_match_any_target_and_unqualified_names() -> None:
    op = Operation("postgres", "db", "read", targets=("public.orders", "Audit.Log"))
    assert matches(op, tables="orders") and matches(op, targets=["x", "audit.*"]) and matches(op, tables="LOG")
    assert matches(op, tables="regex:^public\\.") and not matches(op, tables="users")
    assert not matches(op, tables="other.orders")
    http = Operation("http", "api", "read", targets=("/v1/file.json",))
    assert not matches(http, tables="json") and matches(http, tables="/v1/*")


def test_attributes_any_of() -> None:
    op = Operation("postgres", "db", "write", attributes=frozenset({"unbounded", "copy_program"}))
    assert matches(op, attributes="unbounded") and matches(op, attributes=["x", "COPY_*"])
    assert not matches(op, attributes="multi") and not matches(PG, attributes="unbounded")


def test_body_json_paths() -> None:
    body = {"amount": 1500, "refund": True, "note": None, "customer": {"tier": "gold"},
            "items": [{"sku": "A-1"}, {"sku": "B-2"}]}
    op = Operation("http", "api", "write", method="POST", path="/r", body=body)
    assert matches(op, body={"$.amount": "1*"}) and matches(op, body={"$.amount": 1500})
    assert matches(op, body={"$.refund": True}) and matches(op, body={"$.note": None})
    assert matches(op, body={"$.customer.tier": ["silver", "gold"]})
    assert matches(op, body={"$.items[*].sku": "B-*"}) and matches(op, body={"$.items[0].sku": "A-1"})
    assert matches(op, body={"$.customer.*": "gold"})
    assert not matches(op, body={"$.items[1].sku": "A-1"}) and not matches(op, body={"$.items[5].sku": "*"})
    assert not matches(op, body={"$.customer": "*"})  # objects are not scalars
    assert not matches(op, body={"$.amount": "1*", "$.refund": False})  # every path must match
    assert not matches(Operation("http", "api", "write"), body={"$.amount": "*"})


def test_time_window_days_between_tz() -> None:
    in_hours = {"days": ["mon-fri"], "between": "09:00-17:00", "tz": "Europe/Paris"}
    assert matches(PG, now=NOW, time=in_hours)  # Fri 13:00 in Paris
    assert not matches(PG, now=NOW + timedelta(hours=5), time=in_hours)  # 18:00 Paris
    assert matches(PG, now=NOW + timedelta(hours=3, minutes=59), time=in_hours)  # 16:59
    assert not matches(PG, now=NOW + timedelta(days=1), time=in_hours)  # Saturday
    night = {"between": "22:00-06:00"}
    assert matches(PG, now=NOW.replace(hour=23), time=night) and matches(PG, now=NOW.replace(hour=5), time=night)
    assert not matches(PG, now=NOW.replace(hour=6), time=night)
    assert matches(PG, now=NOW.replace(hour=23, minute=59), time={"between": "00:00-24:00"})
    assert matches(PG, now=NOW.replace(tzinfo=None), time={"days": "fri"})
    assert matches(PG, now=None, time={"days": ["mon-sun"]})  # uses the clock


def test_rule_index_keeps_every_rule_that_can_match() -> None:
    rules = [rule("exact", protocol="postgres", connection=["db", "db"]), rule("glob", "review", protocol="p*"),
             rule("anyproto", "mask", connection="db2"), rule("regexconn", "allow", connection="regex:^api$")]
    policy = compile_policy(rules, GRANTS + [GrantSpec("agent", "x")])
    assert evaluate(policy, Operation("PostGres", "db", "read"), WHO, NOW).rule == "exact"
    assert evaluate(policy, Operation("postgres", "db2", "read"), WHO, NOW).rule == "glob"
    v = evaluate(policy, Operation("ftp", "db2", "read"), WHO, NOW)
    assert (v.action, [m.rule for m in v.masks]) == ("allow", ["anyproto"])
    assert evaluate(policy, Operation("http", "api", "read"), WHO, NOW).rule == "regexconn"
    assert evaluate(policy, Operation("mysql", "db", "read"), WHO, NOW).rule is None
    assert evaluate(policy, Operation("postgres", "x", "read"), WHO, NOW).rule == "glob"


def test_all_keys_must_match() -> None:
    assert matches(PG, protocol="postgres", kind="read")
    assert not matches(PG, protocol="postgres", kind="write")


# --- precedence, masks ---------------------------------------------------------------------

def test_deny_beats_review_beats_allow_in_any_order() -> None:
    rules = [rule("ok", "allow"), rule("ask", "review"), rule("no", "deny"), rule("no2", "deny")]
    assert verdict(rules).rule == "no"
    assert verdict(list(reversed(rules))).rule == "no2"
    v = verdict([rule("ok", "allow"), rule("ask", "review", kind="read")])
    assert (v.action, v.rule) == ("review", "ask")
    assert verdict([rule("ok", "allow")]).rule == "ok"


def test_first_review_in_file_order_gives_the_review_spec() -> None:
    first = Rule.from_dict({"name": "a", "match": {}, "action": "review", "message": "why",
                            "approvers": {"groups": ["fin"], "count": 2}, "hold": "5m", "expires_after": "2h",
                            "slack": False, "channel": "#fin"})
    v = verdict([rule("b0", "allow"), first, rule("b", "review")])
    assert (v.rule, v.message) == ("a", "why")
    assert v.review == ReviewSpec(groups=("fin",), count=2, hold_seconds=300.0, expires_after_seconds=7200.0,
                                  slack=False, channel="#fin")


def test_masks_add_up_on_allow_and_review_not_deny() -> None:
    masks = [rule("m1", "mask"), rule("m2", "mask", kind="read"), rule("m3", "mask", kind="write")]
    v = verdict(masks)
    assert v.action == "allow" and [m.rule for m in v.masks] == ["m1", "m2"]
    assert v.masks[0] == MaskSpec(fields=("m1",), detectors=(), strategy="redact", rule="m1")
    assert [m.rule for m in verdict(masks + [rule("r", "review")]).masks] == ["m1", "m2"]
    denied = verdict(masks + [rule("d", "deny")])
    assert denied.action == "deny" and denied.masks == ()


def test_disabled_rules_are_skipped() -> None:
    off = Rule.from_dict({"name": "off", "match": {}, "action": "deny", "enabled": False})
    assert verdict([off]).action == "allow"


def test_deny_message_defaults_to_rule_name() -> None:
    assert verdict([rule("no", "deny")]).message == "denied by rule no"


def test_cached_plans_still_test_dynamic_conditions() -> None:
    policy = compile_policy([rule("refunds", path="/refunds*"), rule("m", "mask", path="/a*")], GRANTS)
    op = Operation("http", "api", "write", method="POST", path="/refunds/1")
    assert evaluate(policy, op, WHO, NOW).action == "deny"
    v = evaluate(policy, Operation("http", "api", "write", method="POST", path="/a/1"), WHO, NOW)
    assert v.action == "allow" and [m.rule for m in v.masks] == ["m"]
    assert evaluate(policy, op, WHO, NOW).action == "deny"


def test_plans_are_not_shared_between_group_sets() -> None:
    policy = compile_policy([rule("ops-only", groups="ops")], GRANTS)
    assert evaluate(policy, PG, Principal("agent", frozenset({"ops"})), NOW).action == "deny"
    assert evaluate(policy, PG, Principal("agent", frozenset({"dev"})), NOW).action == "allow"
    mutable = Principal("agent", {"ops"})  # type: ignore[arg-type]
    assert evaluate(policy, PG, mutable, NOW).action == "deny"


def test_example_policy_end_to_end() -> None:
    reference = (Path(__file__).parents[2] / "docs" / "policy.md").read_text()
    doc = load_policy(reference.split("```yaml\n", 1)[1].split("```", 1)[0])  # the reference's example
    policy = compile_policy(doc.rules, doc.grants, doc.service_accounts, version=3)
    who = Principal("etl-agent")
    assert policy.version == 3
    assert evaluate(policy, Operation("postgres", "orders-db", "ddl"), who, NOW).rule == "no-ddl"
    v = evaluate(policy, Operation("postgres", "orders-db", "write"), who, NOW)
    assert (v.action, v.rule, v.review.groups, [m.rule for m in v.masks]) == (  # type: ignore[union-attr]
        "review", "writes-need-dba", ("dba",), ["mask-pii"])
    refund = Operation("http", "billing-api", "write", method="post", path="/v1/refunds/9")
    assert evaluate(policy, refund, who, NOW).review.count == 2  # type: ignore[union-attr]
    assert evaluate(policy, refund, who, datetime(2027, 2, 1, tzinfo=UTC)).rule == "no-grant"
    assert evaluate(policy, Operation("ssh", "web-1", "exec", command="ls"), who, NOW).rule == "no-grant"


# --- robustness --------------------------------------------------------------------------

EVERY_KEY = [
    rule("a", protocol=["http", "regex:^p"], connection="d*", kind="w*", tables=["users", "regex:x"]),
    rule("b", "review", method="P*", host="*.io", path="regex:^/v\\d", body={"$.a[*].b": "1*"}),
    rule("c", "mask", command="rm *", attributes="unbounded", groups="ops"),
    rule("d", "allow", identity="agent", time={"days": "mon-fri", "between": "22:00-06:00", "tz": "Asia/Tokyo"}),
    rule("e", body={"$.x.y": [True, None, 3]}),
]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["a", "b", "x", "y"]), inner, max_size=3), max_leaves=10)
small_text = st.text(max_size=12)
ops = st.builds(
    Operation,
    protocol=st.sampled_from(["http", "postgres", "mysql", "ssh", "HTTP", ""]) | small_text,
    connection=st.sampled_from(["db", "db2", "api", "box"]) | small_text,
    kind=st.sampled_from(["read", "write", "ddl", "exec", ""]) | small_text,
    text=small_text,
    targets=st.tuples(small_text, small_text) | st.just(()),
    method=st.none() | st.sampled_from(["GET", "post"]) | small_text,
    host=st.none() | small_text,
    path=st.none() | small_text,
    command=st.none() | small_text,
    attributes=st.frozensets(st.sampled_from(["unbounded", "x"]) | small_text, max_size=3),
    body=json_values,
)


@settings(max_examples=500, deadline=None)
@given(op=ops, groups=st.frozensets(st.sampled_from(["ops", "team"]) | small_text, max_size=3),
       sa=st.sampled_from(["agent", "nobody"]) | small_text,
       now=st.none() | st.datetimes(timezones=st.none() | st.just(UTC)))
def test_evaluate_never_raises(op: Operation, groups: frozenset[str], sa: str, now: datetime | None) -> None:
    v = evaluate(compile_policy(EVERY_KEY, GRANTS), op, Principal(sa, groups), now)
    assert v.action in ("allow", "deny", "review")
    if (sa, op.connection) not in {(g.service_account, g.connection) for g in GRANTS}:
        assert v.rule == "no-grant"
    if v.action == "deny":
        assert v.masks == ()


# --- depends_on_text (callers may share a verdict between texts) ---------------------------

def test_depends_on_text_only_when_a_rule_that_could_apply_tests_text():
    sql = Operation("postgres", "db", "read", text="select 1", targets=("public.orders",))
    shell = Operation("ssh", "box", "exec", text="rm -rf /", command="rm -rf /")
    web = Operation("http", "api", "read", text="GET /x", method="GET", host="h", path="/x")
    rules = [rule("no-orders", tables=["orders"]), rule("reads", "allow", protocol="postgres", kind="read"),
             rule("no-rm", protocol="ssh", command="rm *"), rule("no-admin", protocol="http", path="/admin*"),
             rule("late", protocol="postgres", kind="write", time={"days": ["sat"]})]
    policy = compile_policy(rules, GRANTS)
    assert not policy.depends_on_text(sql, WHO)  # tables, kind and time do not depend on text
    assert policy.depends_on_text(shell, WHO)
    assert policy.depends_on_text(web, WHO)
    # A command rule without protocol falls back to op.text, so it applies to SQL too.
    assert compile_policy(rules + [rule("no-drop", command="drop *")], GRANTS).depends_on_text(sql, WHO)
    # Body tests, and any operation that carries a body, depend on it.
    body_rule = Rule.from_dict({"name": "b", "match": {"protocol": "http", "body": {"$.a": ["x"]}}, "action": "deny"})
    assert compile_policy([body_rule], GRANTS).depends_on_text(Operation("http", "api", "write"), WHO)
    assert policy.depends_on_text(Operation("http", "api", "write", body={"a": 1}), WHO)
    # No grant: denied whatever the text.
    assert not policy.depends_on_text(Operation("postgres", "nope", "read", text="x"), WHO)


@given(st.sampled_from(["select 1", "select 2 from orders", "delete from orders", "rm -rf /", "/admin/x"]),
       st.sampled_from(["select 9", "drop table t", "rm x", "/other", ""]))
@settings(max_examples=50, deadline=None)
def test_text_free_verdicts_do_not_change_with_text(a, b):
    rules = [rule("no-orders", tables=["orders"]), rule("reads", "allow", kind="read"),
             rule("mask", "mask", tables=["orders"])]
    policy = compile_policy(rules, GRANTS)
    op_a = Operation("postgres", "db", "read", text=a, targets=("orders",))
    op_b = Operation("postgres", "db", "read", text=b, targets=("orders",))
    assert not policy.depends_on_text(op_a, WHO)
    assert evaluate(policy, op_a, WHO, NOW) == evaluate(policy, op_b, WHO, NOW)
