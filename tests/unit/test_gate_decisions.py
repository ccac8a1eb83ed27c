"""The gate's decisions with in-memory fakes: no database (see gate_fakes.no_store)."""
from __future__ import annotations

import asyncio

import pytest

from app.gate import NO_ALLOW_RULE
from app.identity import AuthError
from app.types import Operation, Principal
from tests.unit.gate_fakes import FakeRecording, FakeStore, build, no_store, rule  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_store")

WHO = Principal("etl-agent", groups=frozenset({"etl"}))


def rules():
    return [rule("no-ddl", kind=["ddl"]),
            rule("mask-pii", "mask", tables=["customers"], extra={"fields": ["email"]}),
            rule("writes-need-dba", "review", kind=["write"], extra={"approvers": {"groups": ["dba"]}}),
            rule("no-rm", protocol="ssh", command="rm *")]


def op(sql="select * from orders", kind="read", connection="db", targets=("orders",), **kw) -> Operation:
    return Operation(protocol="postgres", connection=connection, kind=kind, text=sql, targets=targets,
                     fingerprint=kw.pop("fingerprint", sql), **kw)


def test_allow_mask_deny_and_no_grant_without_a_database():
    async def main():
        store = FakeStore(rules(), [("etl-agent", "db")])
        gate = build(store, {"tok": WHO})
        who = await gate.authenticate("tok", claimed="etl-agent")
        assert who == WHO
        assert (await gate.decide(who, op())).action == "allow"
        masked = await gate.decide(who, op("select email from customers", targets=("customers",)))
        assert masked.action == "allow" and [m.rule for m in masked.masks] == ["mask-pii"]
        denied = await gate.decide(who, op("drop table orders", kind="ddl"))
        assert (denied.action, denied.rule, denied.status) == ("deny", "no-ddl", "denied")
        ungranted = await gate.decide(who, op(connection="elsewhere"))
        assert ungranted.action == "deny" and ungranted.rule == "no-grant"
        return store

    store = asyncio.run(main())
    assert [(a, t, d["rule"]) for _, a, t, d in store.audits] == [
        ("decision.deny", "db", "no-ddl"), ("decision.deny", "elsewhere", "no-grant")]


def test_a_refused_credential_is_audited_once_per_window_with_a_count():
    async def main():
        store = FakeStore(rules(), [("etl-agent", "db")])
        gate = build(store, {"tok": WHO})
        for _ in range(3):
            with pytest.raises(AuthError):
                await gate.authenticate("alk_wrongwrongwrongwrong", claimed="etl-agent", protocol="postgres")
        with pytest.raises(AuthError):
            await gate.authenticate(None)
        return store

    store = asyncio.run(main())
    assert [(a, d["user"], d["refused_since_last_entry"]) for _, a, _, d in store.audits] == [
        ("auth.failed", "etl-agent", 0)]


def test_needs_rule_turns_a_default_allow_into_a_denial():
    async def main():
        gate = build(FakeStore([rule("fwd-ok", "allow", protocol="ssh", kind=["admin"], command="forward db:*")],
                               [("etl-agent", "box")]))
        fwd = Operation("ssh", "box", "admin", text="forward db:5432", command="forward db:5432",
                        attributes=frozenset({"port_forwarding"}))
        other = Operation("ssh", "box", "admin", text="forward web:80", command="forward web:80",
                          attributes=frozenset({"port_forwarding"}))
        assert (await gate.decide(WHO, fwd, needs_rule=True)).action == "allow"
        refused = await gate.decide(WHO, other, needs_rule=True)
        assert (refused.action, refused.rule) == ("deny", NO_ALLOW_RULE)
        assert (await gate.decide(WHO, other)).action == "allow"  # without needs_rule the default allows

    asyncio.run(main())


def test_parts_the_strictest_wins_and_a_denied_part_denies_the_line():
    async def main():
        gate = build(FakeStore(rules(), [("etl-agent", "box")]))
        whole = Operation("ssh", "box", "exec", text="ls; rm -rf /", command="ls; rm -rf /")
        parts = [Operation("ssh", "box", "exec", text="ls", command="ls"),
                 Operation("ssh", "box", "exec", text="rm -rf /", command="rm -rf /")]
        denied = await gate.decide_parts(WHO, whole, parts)
        assert (denied.action, denied.rule) == ("deny", "no-rm")
        allowed = await gate.decide_parts(WHO, whole, parts[:1])
        assert allowed.action == "allow"

    asyncio.run(main())


def test_a_failing_store_refuses_with_status_error():
    async def main():
        store = FakeStore(rules(), [("etl-agent", "db")])
        gate = build(store, {"tok": WHO}, version_ttl=0)
        rec = FakeRecording()
        assert (await gate.decide(WHO, op(), recording=rec)).action == "allow"
        store.fail = OSError("store down")
        verdict = await gate.decide(WHO, op(), recording=rec)
        assert (verdict.action, verdict.status, verdict.rule) == ("deny", "error", "airlock-error")
        assert rec.events[-1][1]["status"] == "error"

    asyncio.run(main())


def test_record_allows_false_records_only_what_is_not_a_plain_allow():
    async def main():
        gate = build(FakeStore(rules(), [("etl-agent", "db")]))
        rec = FakeRecording()
        await gate.decide(WHO, op(), recording=rec, record_allows=False)
        assert rec.events == []
        await gate.decide(WHO, op("drop table t", kind="ddl"), recording=rec, record_allows=False)
        assert [(k, e["action"], e["rule"]) for k, e in rec.events] == [("decision", "deny", "no-ddl")]

    asyncio.run(main())


def test_a_new_version_reaches_decisions_and_forgets_cached_verdicts_and_shapes():
    async def main():
        store = FakeStore(rules(), [("etl-agent", "db")])
        gate = build(store, version_ttl=60)  # only the version notification makes it look again
        assert (await gate.decide(WHO, op("select 1 from payroll", targets=("payroll",)))).action == "allow"
        first = gate.stamp()
        table = gate.shapes.table(WHO, "db")
        table.table["x"] = object()  # anything remembered under the old version
        assert len(gate.verdicts) > 0
        store.bump([rule("no-payroll", tables=["payroll"]), *rules()])  # notifies the gate
        assert gate.stamp() is None  # ask the gate before reusing anything
        denied = await gate.decide(WHO, op("select 1 from payroll", targets=("payroll",)))
        assert denied.rule == "no-payroll"
        assert gate.stamp()[0] == first[0] + 1
        assert table.table == {}
        assert store.snapshots_loaded == 2

    asyncio.run(main())


def test_the_version_is_read_at_most_once_per_ttl():
    async def main():
        store = FakeStore(rules(), [("etl-agent", "db")])
        gate = build(store, version_ttl=60)
        for i in range(20):
            await gate.decide(WHO, op(f"select {i} from orders"))
        assert store.version_reads == 1 and store.snapshots_loaded == 1

    asyncio.run(main())


def test_targets_and_routes_come_from_the_snapshot():
    from app.snapshot import Target

    async def main():
        api = Target("api", "http", {"hosts": ["api.example.com", "*.svc.example.com"]})
        gate = build(FakeStore(rules(), [("etl-agent", "api")], targets={"api": api}))
        assert await gate.connection_for_host("API.example.com.") is api
        assert await gate.connection_for_host("x.svc.example.com") is api
        assert await gate.connection_for_host("evil.com") is None
        assert [t.name for t in await gate.connections_for(WHO, "http")] == ["api"]
        assert await gate.connections_for(Principal("nobody"), "http") == []

    asyncio.run(main())
