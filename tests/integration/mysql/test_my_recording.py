"""Masking of result columns, the recording of a MySQL session (statements, verdicts, row
counts, masked samples, run id) and its replay in the portal."""
from __future__ import annotations

import re
import secrets

import pymysql
import pytest
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app.db import session_scope
from app.models import RecordedSession, User

from .conftest import connect, events, wait_for

pytestmark = pytest.mark.timeout(120)


def test_masked_by_name_and_detector_text_protocol(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, email, ssn, note, age FROM people ORDER BY id")
        rows = cur.fetchall()
    ada = rows[0]
    assert ada[0] == 1 and ada[1] == "Ada"
    assert "ada@example.com" not in str(rows) and "123-45-6789" not in str(rows)
    assert "4111 1111 1111 1111" not in ada[4] and ada[4].startswith("card ")
    assert ada[5] != 36 and isinstance(ada[5], str)  # an int column masked by name comes as text


def test_masked_through_a_join_alias_and_star(relay, world):
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT p.* FROM people p JOIN t ON t.id = p.id")
        assert "ada@example.com" not in str(cur.fetchall())
        cur.execute("SELECT email AS e FROM people")  # an alias hides the name: the detectors still run
        # the rule is by column name: an alias is another name, so only detector rules apply
        assert len(cur.fetchall()) == 2


def test_recording_has_statements_verdicts_rows_and_masked_samples(relay, world):
    run = "run-" + secrets.token_hex(4)
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        cur.execute(f"SET @airlock_run = '{run}'")
        cur.execute("SELECT id, email FROM people ORDER BY id")
        cur.execute("SELECT id, name FROM people ORDER BY id")  # the mask rules apply and find nothing
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("DROP TABLE people")
        cur.execute("UPDATE t SET v = v WHERE id = 2")

    def mine():
        return [e for e in events(lambda r: r.run_id == run)]

    evs = wait_for(lambda: (lambda got: got if any(k == "output" and "UPDATE" in d.get("sql", "") for _, k, d in got)
                            else None)(mine()), timeout=15)
    assert evs, "the session was not recorded with its run id"
    outputs = [d for _, k, d in evs if k == "output"]
    select_out = next(d for d in outputs if d["sql"].startswith("SELECT id, email"))
    assert select_out["rows"] == 2 and select_out["columns"] == ["id", "email"]
    assert "ada@example.com" not in str(select_out) and select_out["sample"][0][0] == "1"
    assert "mask-pii" in select_out["masks"]
    assert select_out["masked"] == 2  # both emails: values actually replaced
    names = next(d for d in outputs if d["sql"].startswith("SELECT id, name"))
    assert names["sample"] == [["1", "Ada"], ["2", "Bob"]] and "mask-pii" in names["masks"]
    assert "masked" not in names  # a rule that applied is not a value masked
    decisions = [d for _, k, d in evs if k == "decision"]
    assert any(d["rule"] == "no-schema-changes" and d["action"] == "deny" for d in decisions)
    update = next(d for d in outputs if d["sql"].startswith("UPDATE"))
    assert update["affected_rows"] in (0, 1)


def test_run_id_from_a_connection_attribute(relay, world):
    run = "attr-" + secrets.token_hex(4)
    with connect(relay, world.tokens["agent"], program_name="agent", ) as conn:
        pass
    conn = pymysql.connect(host=relay.host, port=relay.port, user="agent", password=world.tokens["agent"],
                           database="app", ssl={"check_hostname": False, "verify_mode": 0})
    conn.close()
    # PyMySQL sends its own attributes only; mysql-connector lets us add one
    import mysql.connector

    c = mysql.connector.connect(host=relay.host, port=relay.port, user="agent", password=world.tokens["agent"],
                                database="app", ssl_verify_cert=False, auth_plugin="mysql_clear_password",
                                conn_attrs={"airlock_run": run}, use_pure=True, charset="utf8mb4",
                                collation="utf8mb4_general_ci")
    cur = c.cursor()
    cur.execute("SELECT 1")
    cur.fetchall()
    c.close()
    with session_scope() as s:
        found = wait_for(lambda: s.scalars(select(RecordedSession).where(RecordedSession.run_id == run)).first(),
                         timeout=10)
    assert found is not None and found.protocol == "mysql"


def test_portal_replays_a_mysql_session(relay, world):
    run = "replay-" + secrets.token_hex(4)
    with connect(relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        cur.execute(f"SET @airlock_run = '{run}'")
        cur.execute("SELECT name, email FROM people WHERE id = 1")
    with session_scope() as s:
        rec = wait_for(lambda: s.scalars(select(RecordedSession).where(RecordedSession.run_id == run,
                                                                       RecordedSession.ended_at.is_not(None))).first(),
                       timeout=15)
        assert rec is not None
        sid = rec.id
        user = s.scalars(select(User).where(User.email == "dba@example.com")).one()
        user.password_hash = generate_password_hash("pw-for-the-test", method="pbkdf2:sha256:1000")
        user.roles = sorted(set(user.roles or []) | {"admin"})
    from app.portal import create_app

    client = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False}).test_client()
    resp = client.post("/login", data={"email": "dba@example.com", "password": "pw-for-the-test"})
    assert resp.status_code == 302
    html = client.get(f"/sessions/{sid}").get_data(as_text=True)
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "mysql agent → app" in text and f"run {run}" in text
    assert "SELECT name, email FROM people WHERE id = 1" in text  # the statement, as a timeline step
    assert "Ada [REDACTED]" in text and "ada@example.com" not in html  # its masked result
    assert "masked by mask-cards, mask-pii" in text and "1 value masked" in text
