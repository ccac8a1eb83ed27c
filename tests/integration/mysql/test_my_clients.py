"""Other clients through the MySQL relay: mysql-connector-python with server-side prepared
statements (COM_STMT_PREPARE/EXECUTE, binary rows) and SQLAlchemy."""
from __future__ import annotations

import datetime
import decimal

import mysql.connector
import pytest
import sqlalchemy as sa

from .conftest import connect

pytestmark = pytest.mark.timeout(120)


def connector(relay, world, **kw):
    return mysql.connector.connect(host=relay.host, port=relay.port, user="agent", password=world.tokens["agent"],
                                   database="app", ssl_verify_cert=False, auth_plugin="mysql_clear_password",
                                   charset="utf8mb4", collation="utf8mb4_general_ci", use_pure=True, **kw)


def test_prepared_statements_binary_round_trips(relay, world):
    row = (-5, 300, 4000000000, -(2 ** 62), 2.25, decimal.Decimal("12345678901234.123456"),
           datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 678901), b"\x00\x01\xff",
           "zażółć 🐍")
    conn = connector(relay, world)
    cur = conn.cursor(prepared=True)
    cur.execute("DELETE FROM kinds WHERE i = %s", (-5,))
    cur.execute("INSERT INTO kinds (i, si, u, b, d, dec1, dt, ts, bin, txt) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s)", row)
    assert cur.rowcount == 1
    cur.execute("SELECT i, si, u, b, d, dec1, dt, ts, bin, txt FROM kinds WHERE i = %s", (-5,))
    got = cur.fetchall()
    assert len(got) == 1
    got = got[0]
    assert got[:5] == row[:5] and decimal.Decimal(str(got[5])) == row[5]
    assert got[6] == row[6] and got[7] == row[7] and bytes(got[8]) == row[8]
    assert (got[9].decode() if isinstance(got[9], (bytes, bytearray)) else got[9]) == row[9]
    cur.execute("SELECT i, tm, y FROM kinds WHERE i = %s AND txt IS NULL", (-99,))
    assert cur.fetchall() == []
    cur.close()
    conn.close()


def test_prepared_statement_masking_in_binary_rows(relay, world):
    conn = connector(relay, world)
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT id, name, email, note, age FROM people WHERE id = %s", (1,))
    (row,) = cur.fetchall()
    flat = [v.decode() if isinstance(v, (bytes, bytearray)) else v for v in row]
    assert flat[0] == 1 and flat[1] == "Ada"
    assert "ada@example.com" not in str(flat) and "4111 1111 1111 1111" not in str(flat)
    assert flat[4] != 36  # an int masked by name: announced and sent as text
    conn.close()


def test_prepared_statement_denied_and_held(relay, world):
    conn = connector(relay, world)
    cur = conn.cursor(prepared=True)
    with pytest.raises(mysql.connector.Error) as err:
        cur.execute("INSERT INTO audit_log (what) VALUES (%s)", ("forged",))
    assert err.value.errno == 1142 and "audit-log-is-append-never" in err.value.msg
    with pytest.raises(mysql.connector.Error) as err:  # a review with a 1 s hold: pending, naming it
        cur.execute("INSERT INTO refunds VALUES (%s)", (77,))
    assert err.value.errno == 1142 and "review" in err.value.msg and "pending" in err.value.msg
    conn.close()
    with world.target.admin() as c, c.cursor() as plain:
        plain.execute("SELECT COUNT(*) FROM refunds WHERE id = 77")
        assert plain.fetchone() == (0,)
        plain.execute("SELECT COUNT(*) FROM audit_log")
        assert plain.fetchone() == (0,)


def test_sqlalchemy_core_and_transactions(relay, world):
    from tests.integration.mysql.conftest import client_tls

    url = sa.URL.create("mysql+pymysql", username="agent", password=world.tokens["agent"], host=relay.host,
                        port=relay.port, database="app")
    engine = sa.create_engine(url, connect_args={"ssl": client_tls()}, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": "sqla"})
            new = conn.execute(sa.text("SELECT LAST_INSERT_ID()")).scalar()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT v FROM t WHERE id = :id"), {"id": new}).scalar() == "sqla"
            people = sa.Table("people", sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(people.c.name, people.c.email).order_by(people.c.id)).all()
            assert [r.name for r in rows] == ["Ada", "Bob"] and "ada@example.com" not in str(rows)
            with pytest.raises(sa.exc.OperationalError) as err:
                conn.execute(sa.text("DROP TABLE t"))
            assert "1142" in str(err.value)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM t WHERE id = :id"), {"id": new})
    finally:
        engine.dispose()


def test_pymysql_and_connector_agree(relay, world):
    with connect(relay, world.tokens["agent"]) as a, a.cursor() as cur:
        cur.execute("SELECT id, v FROM t ORDER BY id")
        text_rows = cur.fetchall()
    conn = connector(relay, world)
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT id, v FROM t ORDER BY id")
    binary_rows = [tuple(v.decode() if isinstance(v, (bytes, bytearray)) else v for v in r) for r in cur.fetchall()]
    conn.close()
    assert list(text_rows) == binary_rows


def test_binary_rows_record_how_many_values_were_masked(relay, world):
    """The recording of prepared statements (binary rows) counts the values actually
    masked: email, the card in note and age (masked by name) for Ada; nothing for a
    statement the mask rules apply to but find nothing in."""
    import secrets

    from .conftest import events, wait_for

    run = "bin-" + secrets.token_hex(4)
    conn = connector(relay, world, conn_attrs={"airlock_run": run})
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT id, name, email, note, age FROM people WHERE id = %s", (1,))
    cur.fetchall()
    cur.execute("SELECT id, name FROM people WHERE id = %s", (2,))
    rows = [[v.decode() if isinstance(v, (bytes, bytearray)) else v for v in r] for r in cur.fetchall()]
    assert rows == [[2, "Bob"]]
    cur.close()
    conn.close()

    def outputs():
        got = [d for _, kind, d in events(lambda r: r.run_id == run) if kind == "output" and "people" in d.get("sql", "")]
        return got if len(got) == 2 else None

    ada, bob = wait_for(outputs, timeout=15)
    assert ada["sql"].startswith("SELECT id, name, email") and ada["masked"] == 3
    assert bob["sql"].startswith("SELECT id, name FROM") and "masked" not in bob and "mask-pii" in bob["masks"]
