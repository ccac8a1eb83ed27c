"""The MySQL relay's memory of prepared statements' verdicts (app/gate/session_shapes.py
PreparedVerdicts), the policy fact it rests on (no rule reads parameters), and the
relay's count of unread bytes that the fast lane checks (app/relay/mysql/reader.py)."""
from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import replace

from app.gate.session_shapes import MAX_SHAPES, PreparedVerdicts
from app.policy import compile_policy, evaluate, load_policy
from app.policy.model import Match
from app.relay.mysql import reader as counted
from app.types import MaskSpec, Operation, Principal, Verdict

ALLOW = Verdict("allow", rule="reads-ok")
SELECT = Operation(protocol="mysql", connection="app", kind="read", text="SELECT v FROM t WHERE id = ?",
                   targets=("t",), params=("1",), binding="b1")


class FakeGate:
    def __init__(self):
        self.current = (1, 100)

    def stamp(self):
        return self.current


def test_an_allowed_statement_is_remembered_until_the_stamp_moves():
    gate = FakeGate()
    memory = PreparedVerdicts(gate)
    assert memory.remember(7, SELECT, ALLOW, gate.current)
    assert memory.lookup(7).rule == "reads-ok"
    assert memory.lookup(8) is None
    gate.current = None  # the gate must read the store first: not reused, not forgotten
    assert memory.lookup(7) is None
    gate.current = (1, 100)
    assert memory.lookup(7) is not None
    gate.current = (2, 100)  # a new policy version
    assert memory.lookup(7) is None
    gate.current = (1, 100)
    assert memory.lookup(7) is None  # forgotten for good
    assert memory.remember(7, SELECT, ALLOW, (1, 100))
    gate.current = (1, 101)  # the next minute (rules may have time windows)
    assert memory.lookup(7) is None


def test_only_plain_allows_of_plain_reads_and_writes_are_remembered():
    gate = FakeGate()
    memory = PreparedVerdicts(gate)
    mask = MaskSpec(("email",), (), "redact", rule="mask-pii")
    refused = [
        (SELECT, Verdict("deny", rule="no")),
        (SELECT, Verdict("review", rule="dba")),
        (SELECT, replace(ALLOW, status="approved", review_id=4)),  # an approval covers one execute
        (SELECT, replace(ALLOW, status="deferred")),
        (SELECT, replace(ALLOW, masks=(mask,))),
        (replace(SELECT, kind="admin", text="SET sql_mode = ?"), ALLOW),
        (replace(SELECT, kind="tcl", text="COMMIT"), ALLOW),
        (replace(SELECT, kind="write", text="CALL p(?)"), ALLOW),
        (replace(SELECT, text="/*!50000 SELECT */ 1"), ALLOW),
        (replace(SELECT, text="WITH x AS (SELECT 1) SELECT * FROM x"), ALLOW),
    ]
    for op, verdict in refused:
        assert not memory.remember(1, op, verdict, gate.current), (op.text, verdict)
        assert memory.lookup(1) is None
    assert not memory.remember(1, SELECT, ALLOW, None)  # decided while the gate's stamp was None
    for text in ("INSERT INTO t VALUES (?)", "update t set v = ? where id = 1", "DELETE FROM t WHERE id = ?",
                 "REPLACE INTO t VALUES (?)"):
        assert memory.remember(2, replace(SELECT, kind="write", text=text), ALLOW, gate.current), text


def test_forget_clear_and_bound():
    gate = FakeGate()
    memory = PreparedVerdicts(gate)
    memory.remember(1, SELECT, ALLOW, gate.current)
    memory.remember(2, SELECT, ALLOW, gate.current)
    memory.forget(1)
    assert memory.lookup(1) is None and memory.lookup(2) is not None
    memory.clear()
    assert memory.lookup(2) is None
    for i in range(MAX_SHAPES + 1):
        memory.remember(i, SELECT, ALLOW, gate.current)
    assert memory.lookup(MAX_SHAPES) is not None and memory.lookup(0) is None


def test_no_policy_rule_reads_a_statements_parameters():
    """The memory rests on this: every execute of a prepared statement is the same
    operation but for `params` and `binding`. A new match key that reads them must
    make PreparedVerdicts.remember refuse such statements."""
    keys = {f.name for f in dataclasses.fields(Match)}
    assert keys == {"protocol", "connection", "service_account", "groups", "kind", "method", "host", "path",
                    "command", "tables", "attributes", "time", "body"}, \
        "a new match key: check that it cannot read a prepared statement's parameters (session_shapes.py)"
    policy = compile_policy(*_rules_and_grants("""
version: 1
service_accounts: [{name: agent}]
connections: [{name: app, type: mysql, address: "127.0.0.1:3306", username: u}]
grants: [{service_account: agent, connection: app}]
rules:
  - {name: no-1, match: {protocol: mysql, command: ["*1*"]}, action: deny}
  - {name: secret-t, match: {protocol: mysql, tables: [secret]}, action: deny}
  - {name: writes-review, match: {protocol: mysql, kind: write}, action: review, approvers: {groups: [dba]}}
  - {name: reads-ok, match: {protocol: mysql, kind: read}, action: allow}
"""))
    who = Principal("agent")
    for op in (SELECT, replace(SELECT, kind="write", text="UPDATE t SET v = ?")):
        verdicts = {evaluate(policy, replace(op, params=p, binding=b), who)
                    for p, b in ((("1",), "b1"), (("2",), "b2"), ((None,), ""), (("*1*",), "x"))}
        assert len(verdicts) == 1, verdicts


def _rules_and_grants(text: str):
    loaded = load_policy(text)
    return loaded.rules, loaded.grants, loaded.service_accounts


# -- the count of unread bytes (reader.py) ------------------------------------------------------


def test_the_reader_counts_what_is_handed_on_and_what_is_read():
    async def main():
        reader, inner, counting = counted.stream_pair(1 << 16)
        assert reader.pending == 0
        counting.data_received(b"\x01\x00\x00\x00\x0e")
        counting.data_received(b"\x05\x00")
        assert reader.pending == 7
        assert await reader.readexactly(4) == b"\x01\x00\x00\x00"
        assert reader.pending == 3  # the rest of a command under way: the lane keeps off
        assert await reader.read(10) == b"\x0e\x05\x00"
        assert reader.pending == 0
        counting.data_received(b"ab")
        counting.eof_received()
        try:
            await reader.readexactly(5)
        except asyncio.IncompleteReadError as exc:
            assert exc.partial == b"ab"
        else:
            raise AssertionError("no IncompleteReadError")
        assert reader.pending == 0 and reader.at_eof()

    asyncio.run(main())
