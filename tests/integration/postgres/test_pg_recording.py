"""What a session's recording holds: statements, parameters (masked), verdicts, row
counts, timing, masked result samples up to the cap, and the run id."""
from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from app.db import session_scope
from app.models import RecordedSession

from .conftest import dsn, events, wait_for

CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def recorded(relay, world):
    token = world.tokens["agent"]
    with psycopg.connect(dsn(relay, token, application_name="run-42"), autocommit=True) as conn:
        conn.execute("SELECT id, email, note FROM people ORDER BY id").fetchall()
        conn.execute("SELECT id FROM people WHERE note = %s OR id = %s", (CARD, 2)).fetchall()
        conn.execute("SELECT g FROM generate_series(1, 50) g").fetchall()
        # The simple protocol: a whole masked answer, which the writer decodes (pganswer).
        psycopg.ClientCursor(conn).execute("SELECT p.id, p.email, p.note FROM people p WHERE p.id = 1").fetchall()
        # Mask rules apply (the table is people) and find nothing: nothing is recorded as masked.
        psycopg.ClientCursor(conn).execute("SELECT p.id, p.name FROM people p WHERE p.id = 2").fetchall()
        conn.execute("SELECT name, age FROM people WHERE id = 2").fetchall()
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE t")
    with session_scope() as s:
        wait_for(lambda: s.query(RecordedSession).filter_by(run_id="run-42")
                 .filter(RecordedSession.ended_at.isnot(None)).count(), timeout=10)
    return events(lambda r: r.run_id == "run-42")


def outputs(recorded, needle):
    return [d for _, kind, d in recorded if kind == "output" and needle in d.get("sql", "")]


def test_simple_query_with_a_whole_masked_answer(recorded):
    [event] = outputs(recorded, "WHERE p.id = 1")
    assert event["sql"] == "SELECT p.id, p.email, p.note FROM people p WHERE p.id = 1"
    assert event["rows"] == 1 and event["tag"] == "SELECT 1" and event["columns"] == ["id", "email", "note"]
    assert event["sample"] == [["1", "[REDACTED]", "card [REDACTED:credit_card] on file"]]
    assert event["masks"] == ["mask-cards", "mask-pii"]
    assert event["masked"] == 2  # the email and the card number: values actually replaced


def test_mask_rules_that_find_nothing_record_nothing_masked(recorded):
    """Whole answers (simple protocol, the writer's decoding) and frame by frame
    (extended protocol): the rules applied, no value was replaced, so no count."""
    for needle in ("SELECT p.id, p.name FROM people p WHERE p.id = 2", "SELECT name, age FROM people WHERE id = 2"):
        [event] = outputs(recorded, needle)
        assert event["masks"] == ["mask-cards", "mask-pii"] and event["rows"] == 1
        assert event["sample"] == [["Bob", "41"]] or event["sample"] == [["2", "Bob"]]
        assert "masked" not in event


def test_session_row(recorded):
    session = recorded[0][0]
    assert session.service_account == "agent" and session.connection == "app" and session.run_id == "run-42"
    assert session.ended_at is not None and session.digest and session.event_count == len(recorded)
    assert session.meta["tls"] is True


def test_statement_with_masked_result_sample(recorded):
    [event] = outputs(recorded, "SELECT id, email, note FROM people")
    assert event["rows"] == 2 and event["tag"] == "SELECT 2" and event["ms"] >= 0
    assert event["columns"] == ["id", "email", "note"]
    assert event["sample"][0] == ["1", "[REDACTED]", "card [REDACTED:credit_card] on file"]
    assert event["masks"] == ["mask-cards", "mask-pii"]
    assert event["masked"] == 3  # two emails and one card number, over both rows
    assert "ada@example.com" not in str(recorded) and CARD not in str(recorded)


def test_parameters_are_recorded_masked(recorded):
    [event] = outputs(recorded, "WHERE note = $1")
    assert event["params"] == ["[REDACTED:credit_card]", "2"]
    assert event["rows"] == 1 and event["sample"] == [["2"]]
    assert "masked" not in event  # the parameters are masked for the recording; no answer value was


def test_row_cap(recorded):
    [event] = outputs(recorded, "generate_series")
    assert event["rows"] == 50 and len(event["sample"]) == 20 and event["truncated"] is True


def test_denial_is_a_decision_event(recorded):
    decisions = [d for _, kind, d in recorded if kind == "decision"]
    assert any(d["action"] == "deny" and d["rule"] == "no-schema-changes" and d["operation"] == "DROP TABLE t"
               for d in decisions)
    assert not outputs(recorded, "DROP TABLE")  # never ran
