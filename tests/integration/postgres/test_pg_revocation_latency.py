"""The 1 s promise on an open relay session that uses server-side prepared statements:
from the commit of a new deny rule, and of a token's revocation, to the first refused
execution, less than a second (DESIGN §2), measured."""
from __future__ import annotations

import time
from datetime import timedelta

import psycopg

from app.db import session_scope
from app.identity import issue_token, revoke_token
from app.inventory import apply_policy
from app.policy import load_policy

from tests.integration.multinode.probe import Probe

from .conftest import POLICY, dsn

PROMISE = 1.0
FREEZE = """
  - name: freeze-t
    match: {protocol: postgres, tables: [t]}
    action: deny
    message: t is frozen
"""


def _apply(world, extra: str = "") -> None:
    policy = POLICY.format(db=world.target.db, **world.target.roles) + extra
    secrets_env = {f"PG_{k.upper()}_PASSWORD": v for k, v in world.target.passwords.items()}
    with session_scope() as s:
        apply_policy(s, load_policy(policy), actor="test", environ=secrets_env)


def _prepared_probe(conn: psycopg.Connection) -> Probe:
    def attempt() -> bool:
        # prepare=True: a server-side prepared statement, re-executed by Bind/Execute only
        return conn.execute("SELECT id FROM t WHERE id = %s", (1,), prepare=True).fetchone() == (1,)

    return Probe(attempt).start()


def test_a_new_deny_rule_reaches_prepared_statements_within_a_second(world, relay, agent):
    conn = psycopg.connect(dsn(relay, agent), autocommit=True)
    probe = _prepared_probe(conn)
    try:
        probe.wait_through(10)
        _apply(world, FREEZE)
        committed = time.monotonic()
        delay = probe.refusal_after(committed)
        time.sleep(0.3)
    finally:
        probe.stop()
        _apply(world)
        conn.close()
    print(f"deny rule -> refusal of a prepared statement: {delay * 1000:.0f} ms")
    assert delay < PROMISE, f"the prepared statement still ran {delay:.2f} s after the rule was applied"
    assert not probe.through_after(committed + PROMISE)
    assert any("freeze-t" in e for e in probe.errors), probe.errors[-3:]


def test_a_revoked_token_ends_a_prepared_session_within_a_second(world, relay):
    with session_scope() as s:
        issued = issue_token(s, "agent", timedelta(hours=1))
    conn = psycopg.connect(dsn(relay, issued.token), autocommit=True)
    probe = _prepared_probe(conn)
    try:
        probe.wait_through(10)
        with session_scope() as s:
            revoke_token(s, issued.id, by="test")
        committed = time.monotonic()
        delay = probe.refusal_after(committed)
    finally:
        probe.stop()
        conn.close()
    print(f"revoke -> end of a prepared session: {delay * 1000:.0f} ms")
    assert delay < PROMISE, f"the session still ran {delay:.2f} s after the revoke"
    assert not probe.through_after(committed + PROMISE)
    assert any("no longer valid" in e for e in probe.errors), probe.errors[-3:]
