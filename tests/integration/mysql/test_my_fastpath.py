"""The relay's fast path for repeated statements: a shape remembered per session
(shapes.py), the unmasked answer passed through unchanged (plain.py), and the lane in the
transports' callbacks (lane.py). What a client gets and what the recording keeps must be
the same as on the full path; what the lane may not take (masked answers, pipelined
commands) must still come out right and in order."""
from __future__ import annotations

import secrets
import time

import pytest

from app.relay.mysql.wire import lenenc_str

from .conftest import connect, events, wait_for
from .test_my_fuzz import packet, raw_login, recv_packet

pytestmark = pytest.mark.timeout(120)


def _session_of(run: str):
    def closed():
        got = [(r, k, d) for r, k, d in events(lambda r: r.run_id == run)]
        return got if got and got[0][0].ended_at is not None else None
    got = wait_for(closed, timeout=20)
    assert got, f"the session of run {run} was not recorded and closed"
    return got[0][0], [d for _, k, d in got if k == "output"]


def test_a_repeated_shape_answers_and_records_as_the_first(any_relay, world):
    run = "fast-" + secrets.token_hex(4)
    with connect(any_relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        cur.execute(f"SET @airlock_run = '{run}'")
        answers = []
        for i in (1, 2, 1, 2, 3):
            cur.execute("SELECT id, v FROM t WHERE id <= %s ORDER BY id", (i,))
            answers.append(cur.fetchall())
    assert answers[0] == answers[2] == ((1, "one"),)
    assert answers[1] == answers[3] == ((1, "one"), (2, "two"))
    assert len(answers[4]) >= 2
    session, outputs = _session_of(run)
    selects = [d for d in outputs if d["sql"].startswith("SELECT id, v")]
    assert [d["sql"][-10:] for d in selects] == [f"<= {i} ORDER BY id"[-10:] for i in (1, 2, 1, 2, 3)]
    for d, rows in zip(selects, answers):
        assert d["columns"] == ["id", "v"]
        assert d["rows"] == len(rows)
        assert d["sample"] == [[str(a), b] for a, b in rows]
        assert "error" not in d and "masks" not in d
    # the first of the shape took the full path; later ones (or some of them) the lane
    assert session.meta["statements"] == 7  # PyMySQL's SET AUTOCOMMIT, the SET, the five
    if any_relay.env.get("AIRLOCK_RELAY_FASTLANE") == "0":
        assert session.meta["fast_lane"] == 0
    else:
        assert session.meta["fast_lane"] >= 1


def test_a_masked_shape_stays_masked_when_repeated(any_relay, world):
    with connect(any_relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        for i in (1, 2, 1, 2, 1):
            cur.execute("SELECT id, email, note FROM people WHERE id = %s", (i,))
            (row,) = cur.fetchall()
            assert row[0] == i
            assert "@example.com" not in row[1]
            assert "4111 1111 1111 1111" not in row[2]


def test_large_answers_in_many_chunks(any_relay, world):
    with connect(any_relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        for size in (300_000, 700_000, 300_001, 1_500_000):
            cur.execute("SELECT id, REPEAT('x', %s) AS big, v FROM t WHERE id <= 2 ORDER BY id", (size,))
            rows = cur.fetchall()
            assert [(r[0], len(r[1]), r[2]) for r in rows] == [(1, size, "one"), (2, size, "two")]
            assert set(rows[0][1]) == {"x"}


def _select_answer(sock) -> bytes:
    """The single value of a one-column, one-row text result."""
    head = recv_packet(sock)
    assert head == b"\x01", head
    recv_packet(sock)  # the column definition
    assert recv_packet(sock)[:1] == b"\xfe"
    row = recv_packet(sock)
    assert recv_packet(sock)[:1] == b"\xfe"
    value, end = lenenc_str(row, 0)
    assert end == len(row)
    return value


def test_pipelined_queries_are_answered_in_order(any_relay, world):
    tls = raw_login(any_relay, world.tokens["agent"])
    try:
        tls.sendall(packet(b"\x03SELECT 1000", 0))
        assert _select_answer(tls) == b"1000"
        for n in range(1, 200):
            # the second is sent before the first is answered: the lane holds it back
            tls.sendall(packet(b"\x03SELECT %d" % n, 0))
            tls.sendall(packet(b"\x03SELECT %d" % (n + 5000), 0))
            assert _select_answer(tls) == b"%d" % n
            assert _select_answer(tls) == b"%d" % (n + 5000)
        # both in one write: the Python path takes them, in order
        tls.sendall(packet(b"\x03SELECT 7", 0) + packet(b"\x03SELECT 8", 0))
        assert _select_answer(tls) == b"7"
        assert _select_answer(tls) == b"8"
        slow = b"\x03SELECT %d + BENCHMARK(200000, MD5('a'))"
        tls.sendall(packet(slow % 0, 0))
        assert _select_answer(tls) == b"0"
        for n in range(1, 8):
            # two more in one write while the lane has a slow one in flight: held, then the
            # Python path's (they are not one packet)
            tls.sendall(packet(slow % n, 0))
            time.sleep(0.01)
            tls.sendall(packet(b"\x03SELECT %d" % (n + 100), 0) + packet(b"\x03SELECT %d" % (n + 200), 0))
            assert [_select_answer(tls) for _ in range(3)] == [b"%d" % n, b"%d" % (n + 100), b"%d" % (n + 200)]
    finally:
        tls.close()


def test_a_denied_shape_is_never_remembered(any_relay, world):
    import pymysql

    with connect(any_relay, world.tokens["agent"]) as conn, conn.cursor() as cur:
        for i in (1, 2, 3):
            with pytest.raises(pymysql.err.OperationalError) as err:
                cur.execute("INSERT INTO audit_log (id, what) VALUES (%s, 'x')", (i,))
            assert err.value.args[0] == 1142 and "audit-log-is-append-never" in err.value.args[1]
        cur.execute("SELECT COUNT(*) FROM audit_log WHERE id <= 3")
        assert cur.fetchone()[0] == 0


def test_a_client_that_reads_slowly_gets_the_whole_answer(any_relay, world):
    tls = raw_login(any_relay, world.tokens["agent"])
    try:
        tls.sendall(packet(b"\x03SELECT REPEAT('x', 10)", 0))
        assert _select_answer(tls) == b"x" * 10
        # megabytes the client does not read for a while: the relay stops reading the
        # target until the client's side drains, then carries on
        tls.sendall(packet(b"\x03SELECT REPEAT('x', 6000000)", 0))
        time.sleep(1.5)
        assert _select_answer(tls) == b"x" * 6000000
        tls.sendall(packet(b"\x03SELECT REPEAT('x', 3)", 0))
        assert _select_answer(tls) == b"xxx"
    finally:
        tls.close()
