"""Approval-binding bypass attempts, as data (tests/corpus/approvals/cases.yaml).

Each case approves one operation once through the real gate and store, then tries
another: it must be held for a review of its own. The approved operation then still
passes, once, which shows the case can fail. Operations are built the way the
adapters build them: the relay's classifier and Bind binding for SQL, the proxy's
`operation_of` over a real mitmproxy request for HTTP.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from mitmproxy import http

from addons.gatekeeper import operation_of
from app.http.operation import is_json, parse_json_body
from app.approvals import vote
from app.db import session_scope
from app.gate import get_gate
from app.inventory import apply_policy
from app.policy import load_policy
from app.relay.postgres.checks import StatementChecker as Checker
from app.relay.postgres.checks import operations
from app.types import Operation, Principal

CASES = yaml.safe_load((Path(__file__).parent / "approvals" / "cases.yaml").read_text())
POLICY = """
version: 1
service_accounts: [{name: agent}]
users: [{email: dba@example.com, groups: [dba], roles: [approver]}]
connections:
  - {name: db, type: postgres, address: "127.0.0.1:5432", database: app, username: app, password: "x"}
  - {name: api, type: http, hosts: ["bank.test"]}
grants: [{service_account: agent, connection: db}, {service_account: agent, connection: api}]
rules:
  - {name: writes-need-review, match: {connection: db, kind: [write, ddl, admin]}, action: review,
     approvers: {groups: [dba]}}
  - {name: calls-need-review, match: {connection: api, method: [POST, PUT, PATCH, DELETE]}, action: review,
     approvers: {groups: [dba]}}
"""
AGENT = Principal(service_account="agent")


class _Bind:
    """A Bind's parameters as the relay's `pgwire.Bind` holds them."""

    def __init__(self, params, formats):
        self.params = [None if p is None else memoryview(p) for p in params]
        self.param_formats = list(formats)

    def param_format(self, i: int) -> int:
        f = self.param_formats
        return f[i] if len(f) > 1 else (f[0] if f else 0)


def _value(v):
    if v is None:
        return None
    if v.startswith("!long-"):
        v = "x" * 5000 + v[len("!long-"):]
    return v.encode()


def _sql(spec: dict) -> Operation:
    (op,) = operations(spec["sql"], "db")
    if "params" not in spec:
        return op
    params = [_value(v) for v in spec["params"]]
    bind = _Bind(params, spec.get("formats", [0]))
    (bound,) = Checker.bound([op], bind, tuple(spec.get("types", ())), "utf-8")
    return bound


def _http(spec: dict) -> Operation:
    raw = spec.get("body", "").encode("latin-1") if "body" in spec else b""
    req = http.Request.make(spec["method"], spec["url"], raw, spec.get("headers", {}))
    body = parse_json_body(raw) if raw and is_json(req.headers.get("content-type")) else None
    return operation_of(req, "api", body, raw)


def _op(spec: dict) -> Operation:
    return _sql(spec) if "sql" in spec else _http(spec)


def _decide(op: Operation):
    async def go():
        return await get_gate().decide(AGENT, op, hold=0)
    return asyncio.run(go())


@pytest.fixture
def policy(sqlite_store):
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY), actor="test", environ={})
    return sqlite_store


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_an_approval_covers_only_what_was_approved(policy, case):
    approved, attempt = _op(case["approved"]), _op(case["attempt"])
    held = _decide(approved)
    assert held.action == "review" and held.review_id, held
    with session_scope() as s:
        vote(s, held.review_id, voter_email="dba@example.com", decision="approve")
    tried = _decide(attempt)
    assert tried.action == "review", f"{case['id']}: the attempt was let through: {tried}"
    assert tried.review_id != held.review_id, f"{case['id']}: the attempt joined the approved review"
    ran = _decide(approved)
    assert ran.action == "allow" and ran.review_id == held.review_id, ran
    assert _decide(approved).action == "review"  # once


def test_the_corpus_is_not_empty_and_ids_are_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 35 and len(set(ids)) == len(ids)
    assert json.dumps(CASES)  # plain data only
