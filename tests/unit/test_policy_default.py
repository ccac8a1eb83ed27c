"""`default: allow|review|deny`: what a granted operation that no rule decides gets."""
from __future__ import annotations

import pytest

from app.policy import ConnectionDefault, PolicyError, compile_policy, dump_policy, evaluate, load_policy
from app.types import MaskSpec, Operation, Principal

POLICY = """
version: 1
default: review
service_accounts: [{name: agent}]
connections:
  - {name: api, type: http, hosts: [api.example], owner: "group:ops"}
  - {name: open, type: http, hosts: [open.example], default: allow}
  - {name: shut, type: http, hosts: [shut.example], default: deny, owner: "group:ops"}
  - {name: mine, type: http, hosts: [mine.example], owner: alice@example.com}
grants:
  - {service_account: agent, connection: api}
  - {service_account: agent, connection: open}
  - {service_account: agent, connection: shut}
  - {service_account: agent, connection: mine}
rules:
  - {name: reads-are-fine, match: {connection: [api, shut], method: GET}, action: allow}
  - {name: no-admin, match: {path: "/admin*"}, action: deny}
  - {name: hide-ssn, match: {connection: "*"}, action: mask, fields: [ssn]}
"""
WHO = Principal("agent")


def _policy(text: str = POLICY):
    doc = load_policy(text)
    defaults = {c.name: ConnectionDefault.of(doc.default_for(c), c.owner) for c in doc.connections}
    return doc, compile_policy(doc.rules, doc.grants, doc.service_accounts, 1, defaults)


def _op(connection: str, method: str, path: str = "/x") -> Operation:
    return Operation("http", connection, "read" if method == "GET" else "write", method=method,
                     host=f"{connection}.example", path=path)


def test_the_file_default_applies_to_connections_without_their_own() -> None:
    doc, policy = _policy()
    assert [doc.default_for(c) for c in doc.connections] == ["review", "allow", "deny", "review"]
    held = evaluate(policy, _op("api", "POST"), WHO)
    assert (held.action, held.rule) == ("review", "default")
    assert held.review is not None and held.review.groups == ("ops",)  # the owner group approves
    assert held.masks == (MaskSpec(fields=("ssn",), rule="hide-ssn"),)  # masks still add up
    assert "'api'" in held.message and "default is review" in held.message


def test_an_allow_rule_and_a_deny_rule_still_decide_before_the_default() -> None:
    _, policy = _policy()
    assert evaluate(policy, _op("api", "GET"), WHO).rule == "reads-are-fine"
    assert evaluate(policy, _op("api", "GET", "/admin/x"), WHO).action == "deny"
    assert evaluate(policy, _op("shut", "GET"), WHO).action == "allow"


def test_deny_and_allow_defaults_and_admin_only_review_for_a_user_owner() -> None:
    _, policy = _policy()
    denied = evaluate(policy, _op("shut", "POST"), WHO)
    assert (denied.action, denied.rule, denied.masks) == ("deny", "default", ())
    allowed = evaluate(policy, _op("open", "POST"), WHO)
    assert (allowed.action, allowed.rule) == ("allow", None)
    mine = evaluate(policy, _op("mine", "POST"), WHO)
    assert mine.action == "review" and mine.review.groups == ()  # no group: admins decide


def test_without_a_default_everything_granted_is_allowed_as_before() -> None:
    _, policy = _policy(POLICY.replace("default: review\n", "", 1))
    assert evaluate(policy, _op("api", "POST"), WHO).action == "allow"
    assert evaluate(policy, _op("mine", "POST"), WHO).action == "allow"
    assert evaluate(policy, _op("shut", "POST"), WHO).action == "deny"


def test_no_grant_is_denied_whatever_the_default() -> None:
    _, policy = _policy()
    verdict = evaluate(policy, _op("api", "POST"), Principal("stranger"))
    assert (verdict.action, verdict.rule) == ("deny", "no-grant")


def test_bad_defaults_name_line_and_field() -> None:
    text = POLICY.replace("default: review", "default: revue").replace("default: deny", "default: block")
    with pytest.raises(PolicyError) as caught:
        load_policy(text)
    message = str(caught.value)
    assert "policy.yaml:3: default: must be one of allow, review, deny, not 'revue'" in message
    assert "policy.yaml:8: connections[2].default: must be one of allow, review, deny, not 'block'" in message


def test_default_is_a_reserved_rule_name() -> None:
    text = POLICY.replace("name: no-admin", "name: default")
    with pytest.raises(PolicyError, match="reserved"):
        load_policy(text)


def test_defaults_round_trip_through_dump() -> None:
    doc, _ = _policy()
    assert load_policy(dump_policy(doc)) == doc


def test_transaction_control_and_session_settings_are_not_held_by_a_sql_default() -> None:
    doc = load_policy("""
version: 1
default: review
service_accounts: [{name: agent}]
connections: [{name: db, type: postgres, address: "db:5432", username: app}]
grants: [{service_account: agent, connection: db}]
rules:
  - {name: no-commits, match: {connection: db, kind: [tcl], tables: [x]}, action: deny}
""")
    policy = compile_policy(doc.rules, doc.grants, doc.service_accounts, 1,
                            {"db": ConnectionDefault.of("review")})
    # BEGIN, COMMIT and SET application_name (every psql login sends it) pass...
    for text in ("BEGIN", "COMMIT", "SET application_name TO 'psql'"):
        assert evaluate(policy, Operation("postgres", "db", "tcl", text=text), WHO).action == "allow", text
    # ...while everything else, SET ROLE (dcl) included, waits; and rules still apply to tcl.
    assert evaluate(policy, Operation("postgres", "db", "dcl", text="SET ROLE admin"), WHO).action == "review"
    assert evaluate(policy, Operation("postgres", "db", "read", text="SELECT 1"), WHO).action == "review"
    assert evaluate(policy, Operation("postgres", "db", "tcl", targets=("x",)), WHO).action == "deny"
