"""Issue 16, findings 4-8: the relay reads every statement as the target does.

Against the real server: encodings and their aliases by every route, a pipelined
encoding switch, standard_conforming_strings off by a role setting, repeated EXPLAIN
options, messages of many MiB, and TLS records small enough for libpq.
"""
from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from contextlib import contextmanager

import psycopg
import pytest

from app.relay.postgres import protocol as pgwire

from .conftest import dsn, psql, target_rows
from .rawclient import RawClient, error_fields, tls_context

PARITY = "differently from airlock"


def _q(raw: bytes) -> bytes:
    return pgwire.frame(b"Q", raw + b"\0")


def _errors(messages) -> list[dict[str, str]]:
    return [error_fields(body) for kind, body in messages if kind == b"E"]


def _rows(messages) -> list[bytes]:
    out = []
    for kind, body in messages:
        if kind == b"D":
            n = struct.unpack("!i", body[2:6])[0]
            out.append(body[6:6 + n])
    return out


@contextmanager
def _raw(relay, agent, connection: str = "app", **params: str):
    c = RawClient(relay.host, relay.port)
    c.startup("agent", connection, **params)
    kind, body = c.read()
    assert kind == b"R", (kind, body)
    c.send(pgwire.frame(b"p", agent.encode() + b"\0"))
    c.login_messages = c.until_ready()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def victim(world):
    with world.target.admin() as conn:
        conn.execute(f"SET ROLE {world.target.roles['scram']}")
        conn.execute("CREATE TABLE IF NOT EXISTS parity_victim (id int)")
    yield "parity_victim"
    assert target_rows(world.target, "SELECT to_regclass('parity_victim') IS NOT NULL") == [(True,)], \
        "a hidden DROP ran"


# -- finding 4: client encodings ------------------------------------------------------

UNSAFE_SPELLINGS = ["windows932", "S.JIS", "big5 ", "Big-5", "SJIS", "sjis", "Shift_JIS", "mskanji", "win950",
                    "GBK", "win936", "windows936", "UHC", "win949", "GB18030", "JOHAB", "shift_jis_2004", "cp936"]


@pytest.mark.parametrize("spelling", UNSAFE_SPELLINGS)
def test_unsafe_encoding_by_set_and_a_pipelined_hidden_drop(relay, agent, victim, spelling):
    # In SJIS, 0x81 0x5C is one character: the backslash that UTF-8 reads as escaping
    # the quote would vanish, and the DROP after the string would run.
    hidden = "SELECT E'\u00c1\\'; DROP TABLE parity_victim; --'".encode("utf-8")
    quoted = spelling.replace("'", "''")
    with _raw(relay, agent) as c:
        c.send(_q(f"SET client_encoding TO '{quoted}'".encode()) + _q(hidden))
        first, second = c.until_ready(), c.until_ready()
        assert PARITY in _errors(first)[0]["M"]
        assert not _errors(second) and _rows(second) == ["\u00c1'; DROP TABLE parity_victim; --".encode()]


@pytest.mark.parametrize("sql", [
    "SET NAMES 'sjis'", "SET client_encoding = windows932", "SET SESSION client_encoding TO 'BIG5'",
    "SET LOCAL client_encoding TO 'gbk'", "SELECT set_config('client_encoding', 'S.JIS', false)",
    "SELECT set_config('client_' || 'encoding', 'SJIS', false)",
    "SELECT set_config('client_encoding', lower('SJIS'), false)",
    "SELECT 1; SET client_encoding TO 'UHC'", "SET client_encoding TO 932",
    "ALTER ROLE CURRENT_USER SET client_encoding TO 'sjis'",
])
def test_every_sql_route_to_an_unsafe_encoding_is_refused(relay, agent, sql):
    with _raw(relay, agent) as c:
        errors = _errors(c.query(sql.encode().decode()))
        assert errors and PARITY in errors[0]["M"], errors
        assert _rows(c.query("SHOW client_encoding")) == [b"UTF8"]


@pytest.mark.parametrize("params", [
    {"client_encoding": "SJIS"}, {"client_encoding": "windows932"}, {"options": "-c client_encoding=big5"},
    {"options": "--client-encoding=GBK"}, {"options": "-c standard_conforming_strings=off"},
])
def test_unsafe_startup_settings_are_refused(relay, agent, params):
    c = RawClient(relay.host, relay.port)
    c.startup("agent", "app", **params)
    kind, body = c.read()
    assert kind == b"R"
    c.send(pgwire.frame(b"p", agent.encode() + b"\0"))
    kind, body = c.read()
    assert kind == b"E" and "is refused" in error_fields(body)["M"], error_fields(body)
    c.close()


def test_pgclientencoding_is_refused_for_psql(relay, agent):
    import os
    import subprocess
    env = {**os.environ, "PGPASSWORD": agent, "PGSSLMODE": "require", "PGCLIENTENCODING": "SJIS"}
    r = subprocess.run(["psql", "-X", "-h", relay.host, "-p", str(relay.port), "-U", "agent", "-d", "app",
                        "-c", "SELECT 1"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "client_encoding" in r.stderr


def test_pipelined_safe_switch_is_read_in_the_new_encoding(relay, agent):
    with _raw(relay, agent) as c:
        # 0xE9 is 'é' in LATIN1 and not UTF-8: read before the server confirmed the switch,
        # the second query would be refused as invalid UTF-8.
        c.send(_q(b"SET client_encoding TO 'LATIN1'") + _q(b"SELECT '\xe9'"))
        assert not _errors(c.until_ready())
        second = c.until_ready()
        assert not _errors(second) and _rows(second) == [b"\xe9"]
        c.send(_q(b"RESET client_encoding") + _q("SELECT 'é'".encode()))
        c.until_ready()
        assert _rows(c.until_ready()) == ["é".encode()]


def test_rollback_of_a_switch_is_a_barrier_too(relay, agent):
    with _raw(relay, agent) as c:
        assert not _errors(c.query("SET client_encoding TO 'LATIN1'"))
        c.query("BEGIN")
        c.query("SET LOCAL client_encoding TO 'UTF8'")
        # The ROLLBACK takes the server back to LATIN1; 0xE9 read as UTF-8 would be refused.
        c.send(_q(b"ROLLBACK") + _q(b"SELECT '\xe9'"))
        c.until_ready()
        second = c.until_ready()
        assert not _errors(second) and _rows(second) == [b"\xe9"]


def test_extended_switch_then_statement_without_sync_is_refused(relay, agent):
    with _raw(relay, agent) as c:
        c.send(pgwire.parse_message("", "SET client_encoding TO 'LATIN1'") + _bind_execute()
               + pgwire.parse_message("", "SELECT 1") + _bind_execute() + pgwire.frame(b"S"))
        msgs = c.until_ready()
        errors = _errors(msgs)
        assert errors and "followed by Sync" in errors[0]["M"]
        # after Sync, the next batch is read in the encoding the server confirmed
        c.send(pgwire.parse_message("", "SELECT '\u00e9'") + _bind_execute() + pgwire.frame(b"S"))
        msgs = c.until_ready()
        assert not _errors(msgs)


def _bind_execute() -> bytes:
    return (pgwire.frame(b"B", b"\0\0" + struct.pack("!hhh", 0, 0, 0)) + pgwire.frame(b"E", b"\0" + struct.pack("!i", 0)))


@contextmanager
def _role_setting(world, setting: str, value: str):
    role, db = world.target.roles["md5"], world.target.db
    with world.target.admin() as conn:
        conn.execute(f"ALTER ROLE {role} IN DATABASE {db} SET {setting} = '{value}'")
    try:
        yield
    finally:
        with world.target.admin() as conn:
            conn.execute(f"ALTER ROLE {role} IN DATABASE {db} RESET {setting}")


def test_role_default_unsafe_encoding_refuses_statements(relay, agent, world):
    with _role_setting(world, "client_encoding", "SJIS"), _raw(relay, agent, "app_md5") as c:
        errors = _errors(c.query("SELECT 1"))
        assert errors and "client encoding SJIS is refused" in errors[0]["M"]


# -- finding 5: standard_conforming_strings -------------------------------------------

def test_standard_conforming_strings_off_by_role_refuses_statements(relay, agent, world, victim):
    with _role_setting(world, "standard_conforming_strings", "off"), _raw(relay, agent, "app_md5") as c:
        assert (b"S", b"standard_conforming_strings\0off\0") in c.login_messages
        for sql in ("SELECT 'a\\'; DROP TABLE parity_victim; --'", "SELECT 1"):
            errors = _errors(c.query(sql))
            assert errors and "standard_conforming_strings is off" in errors[0]["M"]


@pytest.mark.parametrize("sql", [
    "SET standard_conforming_strings = off", "SET standard_conforming_strings TO 0",
    "SET standard_conforming_strings TO DEFAULT", "RESET standard_conforming_strings",
    "SELECT set_config('standard_conforming_strings', 'off', false)",
    "SET LOCAL standard_conforming_strings = 'false'",
])
def test_turning_standard_conforming_strings_off_is_refused(relay, agent, sql, victim):
    with _raw(relay, agent) as c:
        c.send(_q(sql.encode()) + _q(b"SELECT 'a\\'; DROP TABLE parity_victim; --'"))
        first, second = c.until_ready(), c.until_ready()
        assert PARITY in _errors(first)[0]["M"]
        # still on: the relay reads the DROP after the string, as the server would
        assert "no-schema-changes" in _errors(second)[0]["M"]
        assert _rows(c.query("SHOW standard_conforming_strings")) == [b"on"]


# -- finding 6: repeated EXPLAIN options -------------------------------------------------

@pytest.mark.parametrize("options", ["ANALYZE false, ANALYZE true", "ANALYZE off, ANALYZE", "ANALYZE 0, ANALYZE 1",
                                     "ANALYZE, COSTS off, ANALYZE false, ANALYZE on"])
def test_repeated_explain_options_take_the_last(relay, agent, world, options):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit-log-is-append-never"):
            conn.execute(f"EXPLAIN ({options}) INSERT INTO audit_log (what) VALUES ('unreviewed')")
    assert target_rows(world.target, "SELECT count(*) FROM audit_log WHERE what = 'unreviewed'") == [(0,)]


def test_explain_without_analyze_still_reads(relay, agent):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        plan = conn.execute("EXPLAIN (ANALYZE true, ANALYZE false) INSERT INTO audit_log (what) VALUES ('x')")
        assert plan.fetchall()


# -- finding 7: large messages -------------------------------------------------------------

@pytest.mark.parametrize("size", [int(1.1e6), 3_000_000, 20 << 20])
def test_large_statements_go_through(relay, agent, size):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        # extended protocol: a Parse and a Bind of `size` bytes each
        assert conn.execute("SELECT length(%s::text)", ("x" * size,)).fetchone() == (size,)
        assert conn.execute(f"SELECT length('{'y' * size}')").fetchone() == (size,)


def test_twenty_mib_statement_through_psql(relay, agent):
    size = 20 << 20
    r = psql(relay, agent, "-At", input=f"SELECT length('{'z' * size}');\n", timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == str(size), r.stderr[-500:]


# -- finding 8: TLS records ------------------------------------------------------------------

def test_tls_records_to_the_client_are_at_most_8_kib(relay, agent):
    """Read the relay's raw TLS records (memory BIOs) while it answers 350 kB."""
    sock = socket.create_connection((relay.host, relay.port), timeout=10)
    sock.sendall(struct.pack("!ii", 8, pgwire.SSL_REQUEST))
    assert sock.recv(1) == b"S"
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    records: list[tuple[int, int]] = []
    raw = bytearray()

    def pump_out():
        data = outgoing.read()
        if data:
            sock.sendall(data)

    def pump_in():
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        raw.extend(chunk)
        while len(raw) >= 5 and len(raw) >= 5 + struct.unpack("!H", raw[3:5])[0]:
            n = struct.unpack("!H", raw[3:5])[0]
            records.append((raw[0], n))
            incoming.write(bytes(raw[:5 + n]))
            del raw[:5 + n]

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump_out()
            pump_in()
    pump_out()
    plain = bytearray()

    def send(data: bytes):
        tls.write(data)
        pump_out()

    def read_until_ready() -> bytes:
        while True:
            try:
                plain.extend(tls.read(65536))
            except ssl.SSLWantReadError:
                pump_in()
                continue
            i = plain.find(b"Z\0\0\0\x05")
            if i >= 0 and len(plain) >= i + 6:
                out = bytes(plain[:i + 6])
                del plain[:i + 6]
                return out

    send(pgwire.startup_message({"user": "agent", "database": "app"}))
    while not plain.startswith(b"R"):
        try:
            plain.extend(tls.read(65536))
        except ssl.SSLWantReadError:
            pump_in()
    plain.clear()
    send(pgwire.frame(b"p", agent.encode() + b"\0"))
    read_until_ready()
    records.clear()
    send(pgwire.query_message("select repeat('a',7000) from generate_series(1,50)"))
    answer = read_until_ready()
    sock.close()
    assert answer.count(b"D\0\0") >= 50
    app_data = [n for kind, n in records if kind == 23]
    assert sum(app_data) > 350_000
    # 8 KiB of data plus TLS 1.3's type byte and tag (or 1.2's MAC and padding)
    assert max(app_data) <= 8192 + 64, max(app_data)


def test_psycopg_over_tls_never_hangs_on_larger_results(relay, agent):
    """200 runs of the query that hung psycopg about 1 in 5 times with 16 KiB records."""
    done = threading.Event()
    failures: list[BaseException] = []

    def loop():
        try:
            for _ in range(20):
                with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
                    for _ in range(10):
                        rows = conn.execute("select repeat('a',7000) from generate_series(1,50)").fetchall()
                        assert len(rows) == 50
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=loop, daemon=True).start()
    assert done.wait(180), f"psycopg hung after {time.monotonic() - started:.0f} s"
    assert not failures, failures


# -- finding 9: the server's backend pid --------------------------------------------------

def test_backend_pid_is_the_servers_and_cancel_still_works(relay, agent):
    # Several sessions: the relay runs worker processes, and a CancelRequest may reach any.
    conns = [psycopg.connect(dsn(relay, agent), autocommit=True) for _ in range(4)]
    try:
        for conn in conns:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert conn.info.backend_pid == pid
            assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)
        listener = conns[0]
        listener.execute("LISTEN parity")
        conns[1].execute("NOTIFY parity, 'hello'")
        note = next(listener.notifies(timeout=10))
        assert note.pid == conns[1].info.backend_pid and note.payload == "hello"
        for conn in conns:
            threading.Timer(0.3, conn.cancel).start()
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(20)")
            assert time.monotonic() - started < 10
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        for conn in conns:
            conn.close()


def test_a_cancel_with_the_wrong_secret_does_nothing(relay, agent):
    with psycopg.connect(dsn(relay, agent), autocommit=True) as conn:
        pid = conn.info.backend_pid

        def wrong_cancel():
            with socket.create_connection((relay.host, relay.port)) as s:
                s.sendall(struct.pack("!iiii", 16, pgwire.CANCEL_REQUEST, pid, 12345))

        threading.Timer(0.2, wrong_cancel).start()
        assert conn.execute("SELECT pg_sleep(1.5), 7").fetchone()[1] == 7


def test_encoding_allowlist_agrees_with_the_server(world):
    """Every name the server knows (its aliases, in many spellings) maps to the encoding the
    server says, and only the ASCII-safe ones are accepted; names it does not know are
    refused."""
    from app.sql.pg_session import _SAFE_ALIASES, UNSAFE_ENCODINGS, safe_encoding
    names = set(_SAFE_ALIASES) | {"sjis", "mskanji", "shiftjis", "win932", "windows932", "big5", "win950",
                                  "windows950", "gbk", "win936", "windows936", "uhc", "win949", "windows949",
                                  "gb18030", "johab", "shiftjis2004", "cp936", "ms932", "sjis2004", "utf16"}
    spellings = {n for name in names for n in (name, name.upper(), f"{name[:2]}-{name[2:]}", f" {name}.")}
    with world.target.admin() as conn:
        server = dict(conn.execute("SELECT n, pg_encoding_to_char(pg_char_to_encoding(n)) FROM unnest(%s::text[]) n",
                                   (sorted(spellings),)).fetchall())
    for spelling, canonical in server.items():
        expected = canonical if canonical and canonical not in UNSAFE_ENCODINGS else None
        assert safe_encoding(spelling) == expected, (spelling, canonical)
    assert {server[n] for n in ("sjis", "big5", "gbk", "uhc", "gb18030", "johab", "shiftjis2004")} == set(UNSAFE_ENCODINGS)


def test_a_change_no_statement_announced_ends_the_session(relay, agent, world):
    """A function that calls set_config('client_encoding', ...) is a `read` by its text; when
    the target reports the change the relay did not expect, it closes the session."""
    with world.target.admin() as conn:
        conn.execute(f"SET ROLE {world.target.roles['scram']}")
        conn.execute("CREATE OR REPLACE FUNCTION parity_switch() RETURNS text LANGUAGE sql "
                     "AS $$ SELECT set_config('client_encoding', 'LATIN1', false) $$")
    with _raw(relay, agent) as c:
        c.send(_q(b"SELECT parity_switch()"))
        data = c.read_all()
        assert b"08P01" in data and b"lost track" in data
    with _raw(relay, agent) as c:  # other sessions carry on
        assert _rows(c.query("SELECT 1")) == [b"1"]


def test_sql_ascii_client_is_read_in_the_servers_encoding(relay, agent):
    """No conversion from SQL_ASCII: the server checks and reads the bytes as UTF-8 (its
    encoding here), and so does the relay."""
    with _raw(relay, agent) as c:
        assert not _errors(c.query("SET client_encoding TO 'SQL_ASCII'"))
        assert _rows(c.query("SELECT 'é'")) == ["é".encode()]
        c.send(_q(b"SELECT '\xe9'"))
        errors = _errors(c.until_ready())
        assert errors and errors[0]["C"] == "22021" and errors[0]["M"].startswith("airlock")
