"""Column masking in both protocols, prepared statements, cursors, binary results and COPY."""
from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from .conftest import dsn, psql, start_relay, stop_relay

SECRETS = ("ada@example.com", "123-45-6789", "4111 1111 1111 1111", "bob@example.com")


def no_secret(value) -> bool:
    text = repr(value)
    return not any(s in text for s in SECRETS)


def test_simple_protocol_with_psql(relay, agent):
    r = psql(relay, agent, "-A", "-F", "|", "-c", "SELECT id, name, email, ssn, note FROM people ORDER BY id")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "id|name|email|ssn|note"
    assert lines[1] == "1|Ada|[REDACTED]|[REDACTED]|card [REDACTED:credit_card] on file"
    assert lines[2] == "2|Bob|[REDACTED]|[REDACTED]|nothing to see"
    assert no_secret(r.stdout)


def test_simple_protocol_with_psycopg_client_cursor(relay, agent):
    with psycopg.connect(dsn(relay, agent), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        rows = conn.execute("SELECT id, email, age FROM people WHERE id = %s", (1,)).fetchall()
    assert rows == [(1, "[REDACTED]", 36)]


def test_repeated_simple_queries_that_reuse_an_allowed_shape_stay_masked(relay, agent):
    # The second and later texts differ only in numbers: they reuse the first one's
    # verdict (app/gate/shapes.py), masks included, without being parsed again.
    with psycopg.connect(dsn(relay, agent), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        for _ in range(3):
            for person, age in ((1, 36), (2, 41)):
                rows = conn.execute("SELECT id, email, ssn, age FROM people WHERE id = %s", (person,)).fetchall()
                assert rows == [(person, "[REDACTED]", "[REDACTED]", age)]
        # Another statement in the same session still goes to the gate.
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE people")


def test_extended_protocol_and_reexecuted_prepared_statements(relay, agent):
    with psycopg.connect(dsn(relay, agent), autocommit=True, prepare_threshold=0) as conn:
        for _ in range(4):  # prepared once, then Bind/Execute only: no new RowDescription
            rows = conn.execute("SELECT id, email, ssn, age FROM people WHERE id = %s", (2,)).fetchall()
            assert rows == [(2, "[REDACTED]", "[REDACTED]", 41)]
        info = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert info[0] >= 1  # really server-side prepared


def test_masked_column_of_another_type_is_announced_as_text(relay, agent):
    # A mask on an integer column would not parse as an integer: the relay says "text".
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        row = conn.execute("SELECT age AS ssn FROM people WHERE id = 1").fetchone()
    assert row == ("[REDACTED]",)


def test_binary_results_become_null_when_masked(relay, agent):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        cur = conn.cursor(binary=True)
        rows = cur.execute("SELECT id, email, age, note FROM people ORDER BY id").fetchall()
    # email: masked by name, text in binary is UTF-8, so it is masked in place.
    # note: scanned by the card detector. age: an int the detectors read, no hit.
    assert rows == [(1, "[REDACTED]", 36, "card [REDACTED:credit_card] on file"),
                    (2, "[REDACTED]", 41, "nothing to see")]
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        cur = conn.cursor(binary=True)
        rows = cur.execute("SELECT id, to_jsonb(email) AS email FROM people ORDER BY id").fetchall()
    assert rows == [(1, None), (2, None)]  # jsonb in binary cannot be rewritten: NULL


def test_binary_masked_column_refused_when_so_configured(world):
    relay = start_relay(world, AIRLOCK_RELAY_MASKED_BINARY="refuse")
    try:
        with psycopg.connect(dsn(relay, world.tokens["agent"]), autocommit=True) as conn:
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.cursor(binary=True).execute("SELECT id, to_jsonb(email) AS email FROM people").fetchall()
            assert "binary format" in str(exc.value)
            assert conn.cursor(binary=True).execute("SELECT id FROM people WHERE id = 1").fetchall() == [(1,)]
    finally:
        stop_relay(relay)


def test_named_cursor_fetches_are_masked(relay, agent):
    with psycopg.connect(dsn(relay, agent)) as conn:
        with conn.cursor(name="people_cursor") as cur:
            cur.execute("SELECT id, email FROM people ORDER BY id")
            rows = cur.fetchall()
        conn.rollback()
    assert rows == [(1, "[REDACTED]"), (2, "[REDACTED]")]
    r = psql(relay, agent, "-A", "-t", "-c",
             "BEGIN; DECLARE c CURSOR FOR SELECT email FROM people; FETCH ALL FROM c; COMMIT")
    assert r.returncode == 0 and no_secret(r.stdout) and r.stdout.count("[REDACTED]") == 2


def test_unmasked_tables_pass_untouched(relay, agent):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        assert conn.execute("SELECT id, label FROM exports ORDER BY id").fetchall() == [(1, "one"), (2, "two")]


def test_copy_to_stdout(relay, agent):
    r = psql(relay, agent, "-c", r"\copy exports TO STDOUT")
    assert r.returncode == 0 and r.stdout.split() == ["1", "one", "2", "two"]
    r = psql(relay, agent, "-c", r"\copy people TO STDOUT")
    assert r.returncode != 0 and "a mask applies" in r.stderr and no_secret(r.stdout)
    r = psql(relay, agent, "-c", r"\copy (SELECT * FROM orders) TO STDOUT")
    assert r.returncode != 0 and "needs a policy rule" in r.stderr and "item 10" not in r.stdout
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            with conn.cursor().copy("COPY people TO STDOUT") as copy:
                for _ in copy:
                    pass
        with conn.cursor().copy("COPY exports TO STDOUT") as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
    assert data == b"1\tone\n2\ttwo\n"


def _rows_of(messages) -> list[bytes]:
    return [body for kind, body in messages if kind == b"D"]


def test_statement_names_cannot_be_swapped_behind_the_relay(relay, agent):
    """A name the relay knows must keep meaning what the target really holds under it."""
    from app.relay.postgres import protocol as pgwire

    from .rawclient import RawClient
    from .test_pg_fuzz import bind, execute

    c = RawClient(relay.host, relay.port)
    c.login("agent", "app", agent)
    sync = pgwire.frame(b"S")
    c.send(pgwire.parse_message("s1", "SELECT 'harmless'::text AS x") + sync)
    c.until_ready()
    # Re-using the name through SQL: the target now has a masked query under "s1".
    c.query("DEALLOCATE s1")
    c.query("PREPARE s1 AS SELECT email FROM people")
    c.send(bind("", "s1", [], None) + execute("") + sync)
    replies = c.until_ready()
    assert not any(b"@example.com" in body for body in _rows_of(replies))
    # Re-parsing a name that is taken fails on the target; the relay keeps the old meaning.
    c.send(pgwire.parse_message("s2", "SELECT email FROM people") + sync)
    c.until_ready()
    c.send(pgwire.parse_message("s2", "SELECT 'harmless'::text AS email") + sync)
    c.until_ready()
    c.send(bind("", "s2", [], None) + execute("") + sync)
    rows = _rows_of(c.until_ready())
    assert rows and all(b"[REDACTED]" in body for body in rows)
    c.close()


def test_masked_parse_after_an_error_does_not_hang(relay, agent):
    """After an error the target ignores everything up to Sync, a simple query in between
    and the Describe the relay sends for a masked statement included: the relay must not
    wait for answers that never come (found by the fuzz test)."""
    from app.relay.postgres import protocol as pgwire

    from .rawclient import RawClient, error_fields
    from .test_pg_fuzz import bind, execute

    c = RawClient(relay.host, relay.port, timeout=10)
    c.login("agent", "app", agent)
    sync = pgwire.frame(b"S")
    c.send(pgwire.parse_message("", "SELECT email FROM people") + pgwire.query_message("SELECT 1")
           + bind("", "", [], None)  # the simple query dropped the unnamed statement: an error
           + pgwire.query_message("SELECT 2")  # ignored by the target, as is the rest up to Sync
           + pgwire.parse_message("m1", "SELECT id, email FROM people WHERE id = $1")
           + bind("", "m1", [b"1"], None) + execute("") + sync)
    replies = c.until_ready()  # the simple query's ReadyForQuery
    replies += c.until_ready()  # the Sync's, not a hang
    errors = [error_fields(body)["C"] for kind, body in replies if kind == b"E"]
    assert errors == ["26000"] and not any(b"@example.com" in body for _, body in replies)
    c.send(pgwire.parse_message("m2", "SELECT id, email FROM people WHERE id = $1")
           + bind("", "m2", [b"1"], None) + execute("") + sync)
    rows = [body for kind, body in c.until_ready() if kind == b"D"]
    assert rows and all(b"[REDACTED]" in body for body in rows)
    c.close()
