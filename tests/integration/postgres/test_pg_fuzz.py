"""Random and mutated frames thrown at the relay: before TLS, during startup and after
login. The relay stays up, logs no unexpected error, and a well-behaved client on
another connection keeps working (and keeps being masked) throughout."""
from __future__ import annotations

import socket
import ssl
import struct

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from app.relay.postgres import protocol as pgwire

from .conftest import dsn
from .rawclient import RawClient

FUZZ = settings(max_examples=120, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

def bind(portal: str, statement: str, params: list[bytes], result_format: int | None) -> bytes:
    body = portal.encode() + b"\0" + statement.encode() + b"\0" + struct.pack("!h", 0)
    body += struct.pack("!h", len(params)) + b"".join(struct.pack("!i", len(p)) + p for p in params)
    body += struct.pack("!h", 0) if result_format is None else struct.pack("!hh", 1, result_format)
    return pgwire.frame(b"B", body)


def execute(portal: str, max_rows: int = 0) -> bytes:
    return pgwire.frame(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))


SECRETS = (b"ada@example.com", b"123-45-6789", b"4111 1111 1111 1111")
SEEDS = [
    pgwire.query_message("SELECT 1"),
    pgwire.query_message("SELECT id, email, ssn, note FROM people"),
    pgwire.query_message("BEGIN"),
    pgwire.query_message("COMMIT"),
    pgwire.query_message("DECLARE c CURSOR WITH HOLD FOR SELECT email FROM people"),
    pgwire.query_message("FETCH ALL FROM c"),
    pgwire.query_message("COPY people TO STDOUT"),
    pgwire.query_message("DROP TABLE t"),
    pgwire.parse_message("s", "SELECT id, email FROM people WHERE id = $1"),
    pgwire.parse_message("", "SELECT email, note FROM people"),
    pgwire.parse_message("", "SELECT 2"),
    bind("", "s", [b"1"], None),
    bind("", "", [], 1),  # binary results
    bind("", "", [], None),
    bind("p", "", [], 0),
    bind("", "c", [], None),
    pgwire.describe_message(b"S", "s"),
    pgwire.describe_message(b"S", ""),
    pgwire.describe_message(b"P", ""),
    pgwire.describe_message(b"P", "c"),
    execute(""),
    execute("", 1),
    execute("p"),
    execute("c"),
    pgwire.frame(b"C", b"Ss\0"),
    pgwire.frame(b"C", b"P\0"),
    pgwire.frame(b"S"),
    pgwire.frame(b"H"),
    pgwire.frame(b"d", b"1\thello\n"),
    pgwire.frame(b"c"),
    pgwire.frame(b"f", b"oops\0"),
    pgwire.frame(b"F", b"\0\0\0\x01\0\0\0\0\0\0"),
]


@st.composite
def mutated(draw, seeds=SEEDS):
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=16))
        elif op == "length" and len(data) >= 5:
            data[1:5] = struct.pack("!i", draw(st.sampled_from([-1, 0, 3, 4, 5, 2**31 - 1, len(data) + 100])))
    return bytes(data)


# Valid frames in random order, mutated ones, and noise: the relay must cope with all three.
frames = st.lists(st.one_of(st.sampled_from(SEEDS), mutated(), st.binary(min_size=1, max_size=64)),
                  min_size=1, max_size=8)


def drain(sock, limit: float = 0.5, half_close: bool = True) -> bytes:
    """Half-close (the relay then sees EOF after our bytes) and read until it closes."""
    sock.settimeout(limit)
    data = b""
    try:
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            data += chunk
    except (OSError, ssl.SSLError):
        pass
    return data


@pytest.fixture(scope="module")
def bystander(relay, world):
    conn = psycopg.connect(dsn(relay, world.tokens["agent"]), autocommit=True)
    yield conn
    conn.close()


@pytest.fixture(scope="module", autouse=True)
def log_mark(relay):
    """Where the relay's log stood before the fuzzing (autouse: taken before the first test)."""
    return len(relay.log)


def still_fine(relay, bystander) -> None:
    assert relay.alive(), "\n".join(relay.log[-20:])
    assert bystander.execute("SELECT id, email FROM people WHERE id = 1").fetchone() == (1, "[REDACTED]")


@FUZZ
@given(data=st.binary(min_size=1, max_size=200))
def test_garbage_before_tls(relay, bystander, data):
    sock = socket.create_connection((relay.host, relay.port), timeout=5)
    try:
        sock.sendall(data)
        drain(sock, 0.2)
    finally:
        sock.close()
    still_fine(relay, bystander)


@FUZZ
@given(startup=st.one_of(
    mutated([pgwire.startup_message({"user": "agent", "database": "app"}),
             pgwire.startup_message({"user": "agent", "database": "app", "options": "-c a=b"}),
             struct.pack("!iiii", 16, pgwire.CANCEL_REQUEST, 1, 2)]),
    st.binary(min_size=1, max_size=100)))
def test_garbage_during_startup(relay, bystander, startup):
    c = RawClient(relay.host, relay.port)
    try:
        c.send(startup)
        drain(c.sock, 0.2)
    except (OSError, ssl.SSLError):
        pass
    finally:
        c.close()
    still_fine(relay, bystander)


@FUZZ
@given(batch=st.lists(st.sampled_from(SEEDS), min_size=1, max_size=12))
def test_valid_frames_in_any_order(relay, world, bystander, batch):
    c = RawClient(relay.host, relay.port)
    try:
        c.login("agent", "app", world.tokens["agent"])
        c.send(b"".join(batch) + pgwire.frame(b"S") + pgwire.query_message("ROLLBACK")
               + pgwire.query_message("SELECT 'fuzz' || 'end'"))
        received, finished = until_marker(c.sock)
    finally:
        c.close()
    assert finished, f"no answer to the final query (the relay hung?): {received[-300:]!r} after {batch!r}"
    assert not any(secret in received for secret in SECRETS), received
    still_fine(relay, bystander)


def until_marker(sock, timeout: float = 10) -> tuple[bytes, bool]:
    """Read until the marker query's ReadyForQuery, or until the relay closes the connection."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            at = data.find(b"fuzzend")
            if at >= 0 and data.find(b"Z\0\0\0\x05", at) >= 0:
                return data, True
            chunk = sock.recv(65536)
            if not chunk:
                return data, True  # closed after an error: also an answer
            data += chunk
    except (OSError, ssl.SSLError):
        return data, False


@FUZZ
@given(batch=frames)
def test_garbage_after_login(relay, world, bystander, batch):
    c = RawClient(relay.host, relay.port)
    received = b""
    try:
        c.login("agent", "app", world.tokens["agent"])
        for frame in batch:
            c.send(frame)
        received = drain(c.sock, 0.3)
    except (OSError, ssl.SSLError, ConnectionError):
        pass
    finally:
        c.close()
    assert not any(secret in received for secret in SECRETS), received
    still_fine(relay, bystander)


def test_no_unexpected_errors_were_logged(relay, log_mark, bystander):
    # Runs after the fuzz tests in this module: malformed input must end in a protocol
    # error, never in an exception the relay did not anticipate.
    still_fine(relay, bystander)
    unexpected = [line for line in relay.log[log_mark:] if "Traceback" in line or " ERROR " in line]
    assert not unexpected, "\n".join(relay.log[log_mark:][-60:])
