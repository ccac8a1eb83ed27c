"""COPY FROM STDIN, cancel, broken frames, a lost target, and stopping the relay."""
from __future__ import annotations

import signal
import struct
import threading
import time

import psycopg
import pytest
from psycopg import errors

from app.relay.postgres import protocol as pgwire

from .conftest import dsn, psql, start_relay, stop_relay, target_rows
from .rawclient import RawClient, error_fields


def test_copy_from_stdin_with_psql_and_psycopg(relay, agent, world):
    r = psql(relay, agent, "-c", r"\copy inbox FROM STDIN", input="1\thello\n2\tworld\n\\.\n")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        with conn.cursor().copy("COPY inbox (id, body) FROM STDIN") as copy:
            for i in range(3, 503):
                copy.write_row((i, f"row {i}"))
        # psycopg sends COPY with parameters through the extended protocol
        with conn.cursor().copy("COPY inbox (id, body) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write("1000,csv row\n")
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert target_rows(world.target, "SELECT count(*) FROM inbox") == [(503,)]


def test_copy_into_a_denied_table_is_refused(relay, agent, world):
    r = psql(relay, agent, "-c", r"\copy audit_log (what) FROM STDIN", input="sneaky\n\\.\n")
    assert r.returncode != 0 and "audit-log-is-append-never" in r.stderr
    assert target_rows(world.target, "SELECT count(*) FROM audit_log") == [(0,)]


def test_cancel_reaches_the_target(relay, agent):
    # Several sessions: the relay runs worker processes, and a CancelRequest is a new
    # connection that any of them may accept; it must reach the session's own worker.
    conns = [psycopg.connect(dsn(relay, agent), autocommit=True) for _ in range(4)]
    for conn in conns:
        threading.Timer(0.3, conn.cancel).start()
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        assert time.monotonic() - started < 10
        assert conn.execute("SELECT 2").fetchone() == (2,)
        conn.close()


def test_cancel_ends_a_hold(relay, agent, world):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        noticed = threading.Event()
        conn.add_notice_handler(lambda diag: noticed.set())
        threading.Thread(target=lambda: noticed.wait(20) and conn.cancel()).start()
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("DELETE FROM orders WHERE id = 40")  # held for up to 30 s
        assert time.monotonic() - started < 10
        assert conn.execute("SELECT count(*) FROM orders WHERE id = 40").fetchone() == (1,)


def test_oversized_frame_closes_only_that_connection(relay, agent):
    keeper = psycopg.connect(dsn(relay, agent), autocommit=True)
    c = RawClient(relay.host, relay.port)
    c.login("agent", "app", agent)
    c.send(b"Q" + struct.pack("!i", 1 << 30))  # a 1 GiB query announced
    data = c.read_all()
    assert data[:1] == b"E" and b"54000" in data and b"exceeds" in data
    assert keeper.execute("SELECT 3").fetchone() == (3,)
    keeper.close()


@pytest.mark.parametrize("garbage", [
    b"Q" + struct.pack("!i", 2),  # length below the minimum
    pgwire.frame(b"Q", b"SELECT 1"),  # no terminating NUL
    pgwire.frame(b"B", b"\0\0\xff\xff"),  # negative counts
    pgwire.frame(b"?", b""),  # unknown message type
])
def test_malformed_frames_get_an_error_and_a_close(relay, agent, garbage):
    c = RawClient(relay.host, relay.port)
    c.login("agent", "app", agent)
    c.send(garbage)
    kind, body = c.read()
    assert kind == b"E" and error_fields(body)["C"] == "08P01"
    with pytest.raises(ConnectionError):
        c.read()
    assert relay.alive()


def test_lost_target_gives_a_clear_error(relay, agent, world):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with world.target.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError) as exc:
            conn.execute("SELECT 1")
    assert "terminating connection" in str(exc.value) or "connection to the target was lost" in str(exc.value)
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        assert conn.execute("SELECT 4").fetchone() == (4,)


def test_sigterm_stops_the_relay_cleanly(world):
    relay = start_relay(world)
    try:
        conn = psycopg.connect(dsn(relay, world.tokens["agent"]), autocommit=True)
        assert conn.execute("SELECT 5").fetchone() == (5,)
        relay.proc.send_signal(signal.SIGTERM)
        assert relay.proc.wait(15) == 0
        with pytest.raises(psycopg.OperationalError) as exc:
            conn.execute("SELECT 6")
        assert "shutting down" in str(exc.value) or "closed" in str(exc.value)
        assert any("relay stopped" in line for line in relay.log)
    finally:
        stop_relay(relay)  # whatever failed above: nothing of it keeps running
