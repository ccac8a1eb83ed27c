"""The fast lane's hand-overs (app/relay/postgres/fastlane.py), run against the relay with and
without it: whatever the lane takes or gives back, the client sees what PostgreSQL
would have answered, in order. A statement's second run of a shape is the lane's."""
from __future__ import annotations

import secrets
import struct

import psycopg

from app.db import session_scope
from app.models import RecordedSession
from app.relay.postgres import protocol as pgwire

from .conftest import dsn, wait_for
from .rawclient import RawClient, error_fields


def _login(relay, agent) -> RawClient:
    c = RawClient(relay.host, relay.port)
    c.login("agent", "app", agent)
    return c


def _rows(messages) -> list[list[str | None]]:
    out = []
    for kind, body in messages:
        if kind == b"D":
            n = struct.unpack("!h", body[:2])[0]
            pos, row = 2, []
            for _ in range(n):
                length = struct.unpack("!i", body[pos:pos + 4])[0]
                pos += 4
                row.append(None if length < 0 else body[pos:pos + length].decode())
                pos += max(length, 0)
            out.append(row)
    return out


def _kinds(messages) -> bytes:
    return b"".join(kind for kind, _ in messages)


def test_a_repeated_shape_answers_like_its_first_run(relay, agent):
    c = _login(relay, agent)
    try:
        for i in (1, 2, 1, 2):
            got = c.query(f"SELECT id FROM t WHERE id = {i}")
            assert _kinds(got) == b"TDCZ" and _rows(got) == [[str(i)]]
    finally:
        c.close()


def test_masks_hold_on_the_lane(relay, agent):
    c = _login(relay, agent)
    try:
        for i in (1, 2, 1):
            rows = _rows(c.query(f"SELECT id, email FROM people WHERE id = {i}"))
            assert len(rows) == 1 and rows[0][0] == str(i)
            assert "@example.com" not in rows[0][1], rows
    finally:
        c.close()


def test_queries_sent_together_are_answered_in_order(relay, agent):
    c = _login(relay, agent)
    try:
        c.query("SELECT id FROM t WHERE id = 1")  # the shape is now known
        c.send(pgwire.query_message("SELECT id FROM t WHERE id = 2") + pgwire.query_message("SELECT id FROM t WHERE id = 1"))
        first, second = c.until_ready(), c.until_ready()
        assert _rows(first) == [["2"]] and _rows(second) == [["1"]]
    finally:
        c.close()


def test_an_extended_query_behind_a_statement_in_flight(relay, agent):
    """The lane's statement is still unanswered when Parse/Bind/Execute arrive: the
    Python path must place its answers after it."""
    c = _login(relay, agent)
    try:
        c.query("SELECT id, email FROM people WHERE id = 1")
        c.send(pgwire.query_message("SELECT id, email FROM people WHERE id = 2"))
        c.send(pgwire.parse_message("", "SELECT email FROM people WHERE id = $1")
               + pgwire.frame(b"B", b"\0\0" + struct.pack("!hhi", 0, 1, 1) + b"1" + struct.pack("!h", 0))
               + pgwire.frame(b"E", b"\0" + struct.pack("!i", 0)) + pgwire.frame(b"S"))
        simple, extended = c.until_ready(), c.until_ready()
        assert _rows(simple)[0][0] == "2" and "@example.com" not in _rows(simple)[0][1]
        assert _kinds(extended) == b"12DCZ"
        assert "@example.com" not in _rows(extended)[0][0]
    finally:
        c.close()


def test_an_error_answer_goes_back_to_the_python_path(relay, agent):
    c = _login(relay, agent)
    try:
        assert _rows(c.query("SELECT 10 / (id - 1) FROM t WHERE id = 2")) == [["10"]]
        failed = c.query("SELECT 10 / (id - 1) FROM t WHERE id = 1")  # same shape, division by zero
        assert _kinds(failed) in (b"EZ", b"TEZ") and error_fields(failed[-2][1])["C"] == "22012"
        assert failed[-1][1] == b"I"
        assert _rows(c.query("SELECT 10 / (id - 1) FROM t WHERE id = 2")) == [["10"]]
    finally:
        c.close()


def test_a_long_answer_goes_back_to_the_python_path(relay, agent):
    """More rows than the recording samples: not a plain answer, the Python path
    streams it, then the lane takes the next statement again."""
    c = _login(relay, agent)
    try:
        for _ in range(2):
            got = c.query("SELECT g FROM generate_series(1, 3000) g WHERE g > 1")
            assert len(_rows(got)) == 2999 and _rows(got)[-1] == ["3000"]
        assert _rows(c.query("SELECT id FROM t WHERE id = 2")) == [["2"]]
    finally:
        c.close()


def test_a_transaction_block_on_the_lane(relay, agent):
    c = _login(relay, agent)
    try:
        c.query("SELECT id FROM t WHERE id = 1")
        assert c.query("BEGIN")[-1] == (b"Z", b"T")
        got = c.query("SELECT id FROM t WHERE id = 2")
        assert _rows(got) == [["2"]] and got[-1] == (b"Z", b"T")
        bad = c.query("SELECT id FROM t WHERE id = 1 AND nosuchcolumn = 1")
        assert bad[-1] == (b"Z", b"E")
        assert c.query("SELECT id FROM t WHERE id = 1")[-1] == (b"Z", b"E")  # aborted: an error again
        assert c.query("ROLLBACK")[-1] == (b"Z", b"I")
        assert _rows(c.query("SELECT id FROM t WHERE id = 2")) == [["2"]]
    finally:
        c.close()


def test_the_lane_carries_repeated_statements_when_it_is_on(relay, agent, world):
    run = f"lane-{secrets.token_hex(4)}"
    with psycopg.connect(dsn(relay, agent, application_name=run), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)  # the simple protocol: one Query a statement
        for i in range(20):
            assert cur.execute(f"SELECT id FROM t WHERE id = {1 + i % 2}").fetchall() == [(1 + i % 2,)]
    with session_scope() as s:
        row = wait_for(lambda: s.query(RecordedSession).filter_by(run_id=run)
                       .filter(RecordedSession.ended_at.isnot(None)).one_or_none(), timeout=10)
        assert row is not None
        meta = row.meta
    assert meta["statements"] >= 20
    if world.target.lane:
        # The first of the shape takes the Python path; the lane takes the rest unless the
        # gate's stamp is due for its store look, which sends one to the Python path.
        assert meta["lane"] > 0, meta
    else:
        assert meta["lane"] == 0, meta
