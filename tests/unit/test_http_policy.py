"""The HTTP policy options of issue 16: `unmasked_types` on mask rules and
`path_case_sensitive` on http connections, as the loader and the engine read them."""
from __future__ import annotations

import pytest

from app.policy import GrantSpec, Rule, compile_policy, evaluate, load_policy
from app.policy.errors import PolicyError
from app.types import Operation, Principal

BASE = """
version: 1
service_accounts: [{name: agent}]
connections:
  - {name: api, type: http, hosts: [api.example.com]%s}
grants: [{service_account: agent, connection: api}]
rules:
%s
"""


def _load(rules: str, connection: str = ""):
    return load_policy(BASE % (connection, rules))


def test_unmasked_types_load_and_reach_the_verdict():
    doc = _load("  - {name: m, match: {connection: api}, action: mask, detectors: [email],"
                " unmasked_types: [image/png, 'image/*']}")
    (rule,) = doc.rules
    assert rule.unmasked_types == ("image/png", "image/*")
    assert Rule.from_dict(rule.to_dict()) == rule
    op = Operation("http", "api", "read", method="GET", host="api.example.com", path="/x")
    verdict = evaluate(compile_policy(doc.rules, [GrantSpec("agent", "api")]), op, Principal("agent"))
    assert verdict.masks[0].unmasked_types == ("image/png", "image/*")


@pytest.mark.parametrize("rules", [
    "  - {name: d, match: {connection: api}, action: deny, unmasked_types: [image/png]}",
    "  - {name: m, match: {connection: api}, action: mask, detectors: [email], unmasked_types: [png]}",
    "  - {name: m, match: {connection: api}, action: mask, detectors: [email], unmasked_types: ['image/png; q=1']}",
])
def test_unmasked_types_are_checked(rules):
    with pytest.raises(PolicyError):
        _load(rules)


def test_path_case_sensitive_is_an_http_boolean():
    doc = _load("  - {name: d, match: {connection: api, path: /admin}, action: deny}", ", path_case_sensitive: true")
    assert doc.connections[0].path_case_sensitive is True
    with pytest.raises(PolicyError):
        _load("  - {name: d, match: {connection: api}, action: deny}", ", path_case_sensitive: 'yes'")
    with pytest.raises(PolicyError):
        load_policy("version: 1\nconnections:\n  - {name: db, type: postgres, address: 'h:5432', username: u,"
                    " path_case_sensitive: true}\n")


def test_case_folding_covers_unicode_lookalikes_but_not_other_letters():
    doc = _load("  - {name: d, match: {connection: api, path: ['/admin', '/admin/*']}, action: deny}")
    policy = compile_policy(doc.rules, [GrantSpec("agent", "api")])

    def action(path: str) -> str:
        op = Operation("http", "api", "read", method="GET", host="api.example.com", path=path)
        return evaluate(policy, op, Principal("agent")).action

    for denied in ("/admin", "/ADMIN", "/Admin/x", "/\uff41\uff44\uff4d\uff49\uff4e", "/adm\u0131n", "/ADM\u0130N"):
        assert action(denied) == "deny", denied
    for allowed in ("/adm1n", "/admins", "/a/admin", "/\u0430dmin"):  # Cyrillic a is another letter
        assert action(allowed) == "allow", allowed


def test_a_targets_rule_on_an_http_path_folds_like_a_path_rule():
    doc = _load("  - {name: d, match: {connection: api, targets: ['/admin*']}, action: deny}")
    policy = compile_policy(doc.rules, [GrantSpec("agent", "api")])
    for path in ("/ADMIN", "/adm\u0131n/x", "/\uff41dmin"):
        op = Operation("http", "api", "read", method="GET", host="api.example.com", path=path, targets=(path,))
        assert evaluate(policy, op, Principal("agent")).action == "deny", path
