"""Logins, refusals and round trips through the MySQL relay with PyMySQL and the mysql client."""
from __future__ import annotations

import datetime
import decimal

import pymysql
import pytest

from .conftest import connect, mysql_cli, wait_for

pytestmark = pytest.mark.timeout(120)


def test_login_and_select(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM t ORDER BY id")
        assert cur.fetchall() == ((1, "one"), (2, "two"))


def test_bad_token_is_1045(relay):
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect(relay, "not-a-token")
    assert err.value.args[0] == 1045


def test_plaintext_login_is_refused(relay, world):
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect(relay, world.tokens["agent"], ssl=None, ssl_disabled=True)
    assert err.value.args[0] == 1045 and "TLS" in err.value.args[1]


def test_unknown_connection(relay, world):
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect(relay, world.tokens["agent"], connection="nope")
    assert err.value.args[0] == 1049


def test_no_grant_is_refused(relay, world):
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect(relay, world.tokens["stranger"], user="stranger")
    assert err.value.args[0] == 1044


def test_denied_is_1142_with_rule_and_message(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("DROP TABLE t")
        assert err.value.args[0] == 1142
        assert "no-schema-changes" in err.value.args[1] and "migrations" in err.value.args[1]
        cur.execute("SELECT COUNT(*) FROM t")  # the session goes on, and t is still there
        assert cur.fetchone()[0] >= 2


def test_executable_comment_is_classified(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as err:
            cur.execute("SELECT 1 /*!50000 ; DROP TABLE t */")
        assert err.value.args[0] in (1064, 1142)  # refused: the comment runs, and it holds a second statement
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("/*!50000 DROP TABLE t */")
        assert err.value.args[0] == 1142 and "no-schema-changes" in err.value.args[1]


def test_round_trips(relay, world):
    row = (-5, 300, 4000000000, -(2 ** 62), 1.5, 2.25, decimal.Decimal("12345678901234.123456"),
           datetime.date(2024, 2, 29), datetime.timedelta(hours=25, minutes=3, seconds=4, microseconds=5000),
           datetime.datetime(2024, 1, 2, 3, 4, 5, 678901), 2024, b"\x00\x01\xff", b"\xde\xad" * 300,
           "zażółć 🐍 gęślą", '{"a": [1, 2]}', "b", b"\x81")
    with connect(relay, world.tokens["agent"], charset="utf8mb4") as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM kinds")
        cur.execute("INSERT INTO kinds VALUES (%s)" % ", ".join(["%s"] * len(row)), row)
        assert cur.rowcount == 1
        cur.execute("INSERT INTO kinds (i) VALUES (NULL)")
        cur.execute("SELECT * FROM kinds ORDER BY i IS NULL, i")
        got = cur.fetchall()
        assert got[0][:9] == row[:9]
        assert got[0][9:] == row[9:]
        assert got[1] == (None,) * len(row)


def test_affected_rows_last_insert_id_and_transactions(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO t (v) VALUES ('three')")
        assert cur.lastrowid > 2
        new = cur.lastrowid
        cur.execute("BEGIN")
        cur.execute("UPDATE t SET v = 'THREE' WHERE id = %s", (new,))
        assert cur.rowcount == 1
        cur.execute("ROLLBACK")
        cur.execute("SELECT v FROM t WHERE id = %s", (new,))
        assert cur.fetchone() == ("three",)
        cur.execute("DELETE FROM t WHERE id = %s", (new,))
        assert cur.rowcount == 1


def test_multi_result_sets(relay, world):
    with connect(relay, world.tokens["agent"], client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT 1 AS a; SELECT 'x' AS b, 2 AS c; UPDATE t SET v = v WHERE id = 1")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == (("x", 2),)
        assert cur.nextset()
        assert cur.rowcount == 0 or cur.rowcount == 1
        assert not cur.nextset()


def test_multi_statement_with_a_denied_part_runs_nothing(relay, world):
    with connect(relay, world.tokens["agent"], client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as conn, \
            conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("INSERT INTO t (v) VALUES ('never'); DROP TABLE t")
        assert err.value.args[0] == 1142
        cur.execute("SELECT COUNT(*) FROM t WHERE v = 'never'")
        assert cur.fetchone() == (0,)


def test_multi_statement_without_the_flag_is_refused(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("SELECT 1; SELECT 2")


def test_use_of_another_database_is_refused(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("USE mysql")
        assert err.value.args[0] == 1044
        cur.execute("USE app")  # the connection's own name is its database
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (world.target.db,)
        with pytest.raises(pymysql.err.OperationalError):
            conn.select_db("mysql")


def test_unsafe_charset_is_refused(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        for sql in ("SET NAMES gbk", "SET CHARACTER SET sjis", "SET character_set_client = big5"):
            with pytest.raises(pymysql.err.OperationalError) as err:
                cur.execute(sql)
            assert err.value.args[0] == 1115
        cur.execute("SELECT @@character_set_client")
        assert cur.fetchone()[0] in ("utf8mb4", "utf8mb3", "utf8", "latin1")


def test_handshake_charset_gbk_is_refused(relay, world):
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect(relay, world.tokens["agent"], charset="gbk")
    assert err.value.args[0] == 1115


def test_load_data_local_is_refused(relay, world, tmp_path):
    f = tmp_path / "rows.csv"
    f.write_text("9,nine\n")
    with connect(relay, world.tokens["agent"], local_infile=True) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute(f"LOAD DATA LOCAL INFILE '{f}' INTO TABLE t FIELDS TERMINATED BY ','")
        assert err.value.args[0] == 1148


def test_mysql_cli_login_select_and_deny(relay, world):
    out = mysql_cli(relay, world.tokens["agent"], "SELECT v FROM t WHERE id = 1")
    assert out.returncode == 0, out.stderr
    # (MariaDB's client always has the clear-text plugin and warns that the option is ignored)
    assert [line for line in out.stdout.splitlines() if not line.startswith("WARNING")] == ["v", "one"]
    bad = mysql_cli(relay, "wrong-token", "SELECT 1")
    assert bad.returncode != 0 and "1045" in bad.stderr
    denied = mysql_cli(relay, world.tokens["agent"], "DROP TABLE t")
    assert denied.returncode != 0 and "1142" in denied.stderr and "no-schema-changes" in denied.stderr


def test_revoked_token_stops_working_in_an_open_session(relay, world):
    import time

    from app.db import session_scope
    from app.identity import revoke_token

    conn = connect(relay, world.tokens["revokee"], user="revokee")
    cur = conn.cursor()
    cur.execute("SELECT 1")
    with session_scope() as s:
        revoke_token(s, world.token_ids["revokee"], by="test")
    time.sleep(1.2)  # the gate sees the store's new version within a second
    with pytest.raises(pymysql.err.MySQLError) as err:
        cur.execute("SELECT 1")
    assert err.value.args[0] == 1045 and "no longer valid" in err.value.args[1]
    conn.close()


def _ended_session(service_account: str):
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import RecordedSession

    with session_scope() as s:
        return s.scalars(select(RecordedSession.id).where(RecordedSession.protocol == "mysql",
                                                          RecordedSession.service_account == service_account,
                                                          RecordedSession.ended_at.is_not(None))).first()


def test_revoked_grant_ends_an_open_session(relay, world):
    from sqlalchemy import select

    from app.campaigns import decisions
    from app.db import session_scope
    from app.models import Grant, utcnow

    conn = connect(relay, world.tokens["leaver"], user="leaver")
    cur = conn.cursor()
    cur.execute("SELECT 1")
    with session_scope() as s:
        grant = s.scalars(select(Grant.id).where(Grant.service_account.has(name="leaver"))).one()
        decisions.take_grant(s, grant, actor="test", reason="left the team", now=utcnow())
    # Idle: the relay closes the session itself (within a second); its recording ends then.
    ended = wait_for(lambda: _ended_session("leaver"), timeout=15)
    assert ended, "the relay did not end the idle session of the revoked grant"
    with pytest.raises(pymysql.err.MySQLError) as err:
        cur.execute("SELECT 1")
    # the relay's parting error, or the closed connection; not the gate's answer to a statement
    assert "the session is closed" in str(err.value) or err.value.args[0] in (2013, 2006, 0), err.value


def test_a_taken_mysql_port_names_its_setting(world):
    import socket
    import subprocess
    import sys

    from .conftest import ROOT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        env = {**__import__("os").environ, **world.env, "AIRLOCK_POSTGRES_PORT": "0", "AIRLOCK_SSH_PORT": "0",
               "AIRLOCK_MYSQL_PORT": str(taken.getsockname()[1])}
        out = subprocess.run([sys.executable, "-m", "app.cli", "relay"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert out.returncode == 78 and "AIRLOCK_MYSQL_PORT" in out.stderr + out.stdout
