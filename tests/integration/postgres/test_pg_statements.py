"""Every statement passes the gate: simple and extended protocol, psql, psycopg, SQLAlchemy."""
from __future__ import annotations

import time
from contextlib import contextmanager

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors, pq

from .conftest import dsn, psql, target_rows

DENIED_BY_POLICY = [
    ("DROP TABLE t", "no-schema-changes"),
    ("TRUNCATE t", "no-schema-changes"),
    ("GRANT SELECT ON t TO PUBLIC", "no-schema-changes"),
    ("/* harmless */ dRoP/**/TaBlE \"t\"", "no-schema-changes"),
    ("DrOp -- a comment\n  TABLE\n public.t", "no-schema-changes"),
    ("WITH gone AS (INSERT INTO audit_log (what) VALUES ('x') RETURNING id) SELECT * FROM gone",
     "audit-log-is-append-never"),
]


@pytest.mark.parametrize("sql, rule", DENIED_BY_POLICY)
def test_denied_in_the_simple_protocol(relay, agent, world, sql, rule):
    r = psql(relay, agent, "-c", sql)
    assert r.returncode != 0
    assert f'denied by rule "{rule}"' in r.stderr and "42501" not in r.stdout
    assert target_rows(world.target, "SELECT count(*) FROM t") == [(2,)]
    assert target_rows(world.target, "SELECT count(*) FROM audit_log") == [(0,)]


@pytest.mark.parametrize("sql, rule", DENIED_BY_POLICY)
def test_denied_in_the_extended_protocol(relay, agent, world, sql, rule):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute(sql, prepare=True)
        assert exc.value.sqlstate == "42501" and rule in str(exc.value)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)  # the session goes on


def test_one_denied_statement_refuses_the_whole_query(relay, agent, world):
    r = psql(relay, agent, "-c", "INSERT INTO t VALUES (99); DROP TABLE t")
    assert r.returncode != 0 and "no-schema-changes" in r.stderr
    r = psql(relay, agent, "-c", "SELECT 1; DROP TABLE t")
    assert "no-schema-changes" in r.stderr and "?column?" not in r.stdout
    assert target_rows(world.target, "SELECT count(*) FROM t WHERE id = 99") == [(0,)]


def test_allowed_multi_statement_query_runs_every_statement(relay, agent):
    r = psql(relay, agent, "-A", "-t", "-c", "SELECT 1; SELECT 2")
    assert r.returncode == 0 and r.stdout.split() == ["1", "2"]


def test_denial_inside_a_transaction_aborts_it(relay, agent, world):
    with psycopg.connect(dsn(relay, agent)) as conn:  # not autocommit: BEGIN is implicit
        conn.execute("INSERT INTO t VALUES (77)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE t")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM t WHERE id = 77").fetchone() == (0,)


def test_denial_in_a_pipeline_rolls_back_the_batch(relay, agent, world):
    # An error rolls back the implicit transaction of its batch, as in PostgreSQL: the
    # allowed INSERT before the refused statement does not stay.
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            with conn.pipeline():
                conn.execute("INSERT INTO t VALUES (%s)", (55,))
                conn.execute("DROP TABLE t")
        assert conn.execute("SELECT count(*) FROM t WHERE id = 55").fetchone() == (0,)
        with conn.pipeline():
            first = conn.execute("SELECT %s::int", (1,))
            second = conn.execute("SELECT %s::text", ("two",))
        assert first.fetchone() == (1,) and second.fetchone() == ("two",)


def test_server_side_prepared_statements_are_checked(relay, agent):
    with psycopg.connect(dsn(relay, agent), autocommit=True, prepare_threshold=0) as conn:
        for i in range(3):
            assert conn.execute("SELECT id FROM t WHERE id = %s", (1,)).fetchone() == (1,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("TRUNCATE t")
        # Statements prepared in SQL cannot be bound by name behind the relay's back.
        conn.execute("PREPARE sneaky AS SELECT 1")  # PREPARE itself is checked as its statement...
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("EXECUTE sneaky")  # ...EXECUTE cannot be: admin, denied by policy


def test_bind_to_a_statement_prepared_outside_the_relay_is_refused(relay, agent):
    from .rawclient import RawClient, error_fields
    from app.relay.postgres import protocol as pgwire

    c = RawClient(relay.host, relay.port)
    c.login("agent", "app", agent)
    c.query("PREPARE s1 AS SELECT 1")
    bind = pgwire.frame(b"B", b"\0s1\0" + b"\0\0" + b"\0\0" + b"\0\0")
    c.send(bind + pgwire.frame(b"E", b"\0" + b"\0\0\0\0") + pgwire.frame(b"S"))
    messages = c.until_ready()
    errs = [error_fields(body) for kind, body in messages if kind == b"E"]
    assert errs and errs[0]["C"] == "26000" and "not prepared through airlock" in errs[0]["M"]
    assert not any(kind == b"D" for kind, _ in messages)
    c.close()


def test_sqlalchemy(relay, agent):
    engine = sa.create_engine(
        f"postgresql+psycopg://agent:{agent}@{relay.host}:{relay.port}/app?sslmode=require", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 2
        with pytest.raises(sa.exc.ProgrammingError) as exc:
            conn.execute(sa.text("DROP TABLE t"))
        assert "no-schema-changes" in str(exc.value)
        conn.rollback()
        rows = conn.execute(sa.text("SELECT id FROM t WHERE id = :id"), {"id": 2}).all()
        assert rows == [(2,)]
    engine.dispose()


EXPORTS_FROZEN = """
  - name: exports-frozen
    match: {protocol: postgres, tables: [exports]}
    action: deny
    message: exports are frozen
"""


@contextmanager
def exports_frozen(world):
    """The suite's policy plus a rule that denies the exports table, while in the block."""
    from app.db import session_scope
    from app.inventory import apply_policy
    from app.policy import load_policy

    from .conftest import POLICY

    base = POLICY.format(db=world.target.db, **world.target.roles)
    secrets_env = {f"PG_{k.upper()}_PASSWORD": v for k, v in world.target.passwords.items()}
    with session_scope() as s:
        apply_policy(s, load_policy(base + EXPORTS_FROZEN), actor="test", environ=secrets_env)
    try:
        yield
    finally:
        with session_scope() as s:
            apply_policy(s, load_policy(base), actor="test", environ=secrets_env)


def test_policy_change_reaches_repeated_simple_queries(relay, agent, world):
    # Texts that differ only in numbers reuse a verdict (app/gate/shapes.py) only
    # while the policy version stands.
    with psycopg.connect(dsn(relay, agent), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        for i in (1, 2, 1):
            assert conn.execute("SELECT id FROM exports WHERE id = %s", (i,)).fetchone() == (i,)
        with exports_frozen(world):
            time.sleep(1.2)  # policy versions are read within 1 s
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.execute("SELECT id FROM exports WHERE id = %s", (2,))
            assert "exports-frozen" in str(exc.value)
        time.sleep(1.2)
        assert conn.execute("SELECT id FROM exports WHERE id = %s", (1,)).fetchone() == (1,)


def test_policy_change_reaches_prepared_statements(relay, agent, world):
    with psycopg.connect(dsn(relay, agent), autocommit=True, prepare_threshold=0) as conn:
        assert conn.execute("SELECT label FROM exports WHERE id = %s", (1,)).fetchone() == ("one",)
        with exports_frozen(world):
            time.sleep(1.6)  # policy versions are read within 1 s; the Bind re-check is a second apart
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.execute("SELECT label FROM exports WHERE id = %s", (1,))  # same prepared statement
            assert "exports-frozen" in str(exc.value)
        time.sleep(1.6)
        assert conn.execute("SELECT label FROM exports WHERE id = %s", (2,)).fetchone() == ("two",)
