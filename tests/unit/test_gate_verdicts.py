"""The gate's verdict cache (app/gate/verdicts.py): pure, no store."""
from __future__ import annotations

from app.gate.verdicts import VerdictCache
from app.policy import GrantSpec, Rule, compile_policy
from app.types import Operation, Principal

WHO = Principal("etl-agent")


def r(name, action="deny", **match):
    return Rule.from_dict({"name": name, "match": match, "action": action})


def policy(version=7):
    return compile_policy([r("no-secrets", tables=["secrets"]), r("reads", "allow", kind="read"),
                           r("no-drop", protocol="ssh", command="rm *")],
                          [GrantSpec("etl-agent", "db"), GrantSpec("etl-agent", "box")], version=version)


def test_verdicts_are_shared_between_literals_only_when_text_cannot_matter():
    cache, p = VerdictCache(), policy()
    one = Operation("postgres", "db", "read", text="select 1 from t", targets=("t",), fingerprint="f")
    two = Operation("postgres", "db", "read", text="select 2 from t", targets=("t",), fingerprint="f")
    assert cache.evaluate(p, 7, WHO, one).rule == "reads"
    assert cache.evaluate(p, 7, WHO, two).rule == "reads"
    assert len(cache) == 1  # one text-free entry for both
    secret = Operation("postgres", "db", "read", text="select 1 from secrets", targets=("secrets",), fingerprint="f")
    assert cache.evaluate(p, 7, WHO, secret).action == "deny"
    # A command rule decides by text: each text is decided on its own.
    ok = Operation("ssh", "box", "exec", text="ls", command="ls", fingerprint="c")
    rm = Operation("ssh", "box", "exec", text="rm -rf /", command="rm -rf /", fingerprint="c")
    assert cache.evaluate(p, 7, WHO, ok).action == "allow"
    assert cache.evaluate(p, 7, WHO, rm).action == "deny"
    assert cache.evaluate(p, 7, WHO, ok).action == "allow"


def test_the_cache_is_bounded_and_keyed_by_version():
    cache, p = VerdictCache(size=8), policy()
    for i in range(20):
        cache.evaluate(p, 7, WHO, Operation("postgres", "db", "read", text=f"select {i}", targets=(f"t{i}",)))
    assert len(cache) == 8
    strict = compile_policy([r("no-reads", kind="read")], [GrantSpec("etl-agent", "db")], version=8)
    op = Operation("postgres", "db", "read", text="select 19", targets=("t19",))
    assert cache.evaluate(p, 7, WHO, op).action == "allow"
    assert cache.evaluate(strict, 8, WHO, op).action == "deny"  # a new version is never served an old verdict
    cache.clear()
    assert len(cache) == 0
