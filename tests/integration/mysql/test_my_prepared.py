"""Prepared statements (COM_STMT_PREPARE/EXECUTE, mysql-connector-python's prepared
cursor) whose verdict the session remembers by statement id (app/gate/session_shapes.py
PreparedVerdicts): repeated executes skip the gate but not the recording, a policy change
reaches a statement prepared before it within the promise, a held statement and a masked
one are never remembered. Each test runs with the fast lane and without it."""
from __future__ import annotations

import secrets
import threading
import time

import mysql.connector
import pytest

from app.db import session_scope
from app.inventory import apply_policy
from app.policy import load_policy

from tests.integration.multinode.probe import Probe

from .conftest import POLICY, events, wait_for
from .test_my_reviews import pending, vote_elsewhere

pytestmark = pytest.mark.timeout(120)

PROMISE = 1.0  # DESIGN §2: a policy change reaches every open session within a second
FREEZE_T = """
  - name: freeze-t
    match: {protocol: mysql, tables: [t]}
    action: deny
    message: t is frozen
"""


def connector(relay, world, run: str | None = None):
    attrs = {"conn_attrs": {"airlock_run": run}} if run else {}
    return mysql.connector.connect(host=relay.host, port=relay.port, user="agent", password=world.tokens["agent"],
                                   database="app", ssl_verify_cert=False, auth_plugin="mysql_clear_password",
                                   charset="utf8mb4", collation="utf8mb4_general_ci", use_pure=True,
                                   autocommit=True, **attrs)


def _apply(world, extra: str = "") -> None:
    policy = POLICY.format(db=world.target.db, user=world.target.user) + extra
    with session_scope() as s:
        apply_policy(s, load_policy(policy), actor="test", environ={"MY_PASSWORD": world.target.password})


def _session_of(run: str):
    """The closed recording of the session tagged `run`, and its output events."""
    def closed():
        got = list(events(lambda r: r.run_id == run))
        return got if got and got[0][0].ended_at is not None else None
    got = wait_for(closed, timeout=20)
    assert got, f"the session of run {run} was not recorded and closed"
    return got[0][0], [d for _, k, d in got if k == "output"]


def _lane_on(relay) -> bool:
    return relay.env.get("AIRLOCK_RELAY_FASTLANE") != "0"


def test_repeated_executes_are_remembered_and_each_is_recorded(any_relay, world):
    run = "prep-" + secrets.token_hex(4)
    ids = [1, 2, 1, 2, 1, 2, 1, 2, 1, 2]
    conn = connector(any_relay, world, run)
    cur = conn.cursor(prepared=True)
    got = []
    for i in ids:
        cur.execute("SELECT id, v FROM t WHERE id = %s", (i,))
        got.append([(a, b.decode() if isinstance(b, (bytes, bytearray)) else b) for a, b in cur.fetchall()])
    cur.close()
    conn.close()
    assert got == [[(i, {1: "one", 2: "two"}[i])] for i in ids]
    session, outputs = _session_of(run)
    selects = [d for d in outputs if d["sql"] == "SELECT id, v FROM t WHERE id = ?"]
    # every execute recorded, with its parameter and its row, remembered or not
    assert [d["params"] for d in selects] == [[str(i)] for i in ids]
    assert [d["sample"] for d in selects] == [[[str(i), {1: "one", 2: "two"}[i]]] for i in ids]
    assert all(d["rows"] == 1 and "masks" not in d and "error" not in d for d in selects)
    # The first execute takes the gate; the rest reuse its verdict (a minute that turns,
    # or a stamp the gate has to renew on a loaded machine, may send one or two back).
    assert session.meta["remembered"] >= len(ids) - 3, session.meta
    if _lane_on(any_relay):  # remembered executes are the lane's to take
        assert session.meta["fast_lane"] >= 1, session.meta
    else:
        assert session.meta["fast_lane"] == 0


def test_a_new_deny_rule_reaches_an_already_prepared_statement(any_relay, world):
    conn = connector(any_relay, world)
    cur = conn.cursor(prepared=True)

    def attempt() -> bool:
        cur.execute("SELECT v FROM t WHERE id = %s", (1,))  # the same prepared statement every time
        rows = cur.fetchall()
        return [r[0].decode() if isinstance(r[0], (bytes, bytearray)) else r[0] for r in rows] == ["one"]

    probe = Probe(attempt).start()
    try:
        probe.wait_through(20)
        _apply(world, FREEZE_T)
        committed = time.monotonic()
        delay = probe.refusal_after(committed)
        time.sleep(0.3)
    finally:
        probe.stop()
        _apply(world)
    try:
        print(f"deny rule -> refusal of a remembered prepared statement: {delay * 1000:.0f} ms")
        assert delay < PROMISE, f"the prepared statement still ran {delay:.2f} s after the rule was applied"
        assert not probe.through_after(committed + PROMISE)
        assert any("freeze-t" in e and "1142" in e for e in probe.errors), probe.errors[-3:]
        # the rule gone again: the same statement runs again, through the gate first
        deadline = time.monotonic() + 10
        while True:
            try:
                assert attempt()
                break
            except mysql.connector.Error as exc:
                assert exc.errno == 1142 and time.monotonic() < deadline, exc
                time.sleep(0.1)
    finally:
        cur.close()
        conn.close()


def test_a_held_statement_is_never_remembered(any_relay, world):
    """An approval covers the execute the approver saw (its parameters): the next execute
    of the same statement, even with the same parameters, is held again."""
    run = "held-" + secrets.token_hex(4)
    base = 10_000 + secrets.randbelow(80_000)
    sql = "INSERT INTO orders (id, item) VALUES (?, ?)"
    conn = connector(any_relay, world, run)
    cur = conn.cursor(prepared=True)
    seen: list[int] = []

    def vote_on_next(decision: str, reason: str) -> threading.Thread:
        def voter() -> None:
            review = wait_for(lambda: (r := pending(sql)) is not None and r.id not in seen and r, timeout=25)
            if review:
                seen.append(review.id)
                vote_elsewhere(any_relay.env, review.id, decision, reason)
        thread = threading.Thread(target=voter)
        thread.start()
        return thread

    try:
        voter = vote_on_next("approve", "one order")
        cur.execute("INSERT INTO orders (id, item) VALUES (%s, %s)", (base, "approved"))
        voter.join()
        assert cur.rowcount == 1 and len(seen) == 1
        # the same statement and parameters again: a new review, rejected this time
        voter = vote_on_next("reject", "once was enough")
        with pytest.raises(mysql.connector.Error) as err:
            cur.execute("INSERT INTO orders (id, item) VALUES (%s, %s)", (base + 1, "approved"))
        voter.join()
        assert len(seen) == 2 and seen[0] != seen[1]
        assert err.value.errno == 1142 and f"review {seen[1]}" in err.value.msg and "once was enough" in err.value.msg
    finally:
        cur.close()
        conn.close()
    with world.target.admin() as c, c.cursor() as plain:
        plain.execute("SELECT id FROM orders WHERE id IN (%s, %s) ORDER BY id", (base, base + 1))
        assert plain.fetchall() == ((base,),)
    session, outputs = _session_of(run)
    assert session.meta["remembered"] == 0, session.meta
    inserts = [d for d in outputs if d["sql"] == sql]
    assert len(inserts) == 2, inserts
    assert inserts[0]["params"] == [str(base), "approved"] and "error" not in inserts[0]
    assert inserts[1]["error"]["code"] == 1142


def test_masks_apply_to_every_execute(any_relay, world):
    run = "masked-" + secrets.token_hex(4)
    conn = connector(any_relay, world, run)
    cur = conn.cursor(prepared=True)
    for i in (1, 2, 1, 2, 1, 2):
        cur.execute("SELECT id, name, email, note FROM people WHERE id = %s", (i,))
        (row,) = cur.fetchall()
        flat = [v.decode() if isinstance(v, (bytes, bytearray)) else v for v in row]
        assert flat[0] == i and flat[1] == {1: "Ada", 2: "Bob"}[i]
        assert "@example.com" not in flat[2] and "4111 1111 1111 1111" not in flat[3]
    cur.close()
    conn.close()
    session, outputs = _session_of(run)
    selects = [d for d in outputs if d["sql"].startswith("SELECT id, name, email, note")]
    assert len(selects) == 6 and all("mask-pii" in d["masks"] for d in selects)
    assert session.meta["remembered"] == 0, session.meta
