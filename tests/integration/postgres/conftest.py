"""The PostgreSQL relay end to end, against the real server at 127.0.0.1:5432.

Session fixtures:
- `target`: a throwaway database and three login roles whose passwords the server
  really asks for. pg_hba.conf here trusts 127.0.0.1, so the server would never ask;
  we put three lines for exactly these roles (scram-sha-256, md5, password) at the top
  of pg_hba.conf, reload, and take them out again at the end. Needs write access to
  pg_hba.conf (root, as in .ci/run).
- `world`: a migrated SQLite store with the policy below and tokens.
- `relay`: `airlock relay` in a subprocess on a free port (AIRLOCK_POSTGRES_PORT=0).
"""
from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
import pytest

from tests.conftest import suite_store
from tests.support import relay as support
from tests.support.relay import ROOT, Relay, _store, stop_relay, wait_for  # noqa: F401 - fixtures and the suite's API

ADMIN_DSN = os.environ.get("AIRLOCK_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
HBA_LOCK = "/tmp/airlock-relay-tests-pg_hba.lock"

POLICY = """
version: 1
service_accounts:
  - {{name: agent, groups: [agents]}}
  - {{name: stranger}}
  - {{name: revokee}}
users:
  - {{email: dba@example.com, groups: [dba], roles: [approver]}}
connections:
  - {{name: app, type: postgres, address: "127.0.0.1:5432", database: {db}, username: {scram},
     password: "${{env:PG_SCRAM_PASSWORD}}", owner: dba@example.com}}
  - {{name: app_md5, type: postgres, address: "127.0.0.1:5432", database: {db}, username: {md5},
     password: "${{env:PG_MD5_PASSWORD}}", owner: dba@example.com}}
  - {{name: app_clear, type: postgres, address: "127.0.0.1:5432", database: {db}, username: {clear},
     password: "${{env:PG_CLEAR_PASSWORD}}", owner: dba@example.com}}
grants:
  - {{service_account: agent, connection: app}}
  - {{service_account: agent, connection: app_md5}}
  - {{service_account: agent, connection: app_clear}}
  - {{service_account: revokee, connection: app}}
rules:
  - name: no-schema-changes
    match: {{protocol: postgres, kind: [ddl, dcl, admin]}}
    action: deny
    message: schema and privilege changes go through migrations
  - name: audit-log-is-append-never
    match: {{protocol: postgres, kind: write, tables: [audit_log]}}
    action: deny
    message: nobody writes the audit log by hand
  - name: deletes-need-a-dba
    match: {{protocol: postgres, kind: write, tables: [orders]}}
    action: review
    approvers: {{groups: [dba]}}
    hold: 30s
  - name: refunds-need-a-dba
    match: {{protocol: postgres, kind: write, tables: [refunds]}}
    action: review
    approvers: {{groups: [dba]}}
    hold: 1s
  - name: mask-pii
    match: {{protocol: postgres, tables: [people]}}
    action: mask
    fields: [email, ssn]
  - name: mask-cards
    match: {{protocol: postgres, tables: [people]}}
    action: mask
    detectors: [credit_card]
  - name: exports-may-be-copied
    match: {{protocol: postgres, attributes: [copy_to_stdout], tables: [exports]}}
    action: allow
"""

SCHEMA = """
CREATE TABLE people (id int PRIMARY KEY, name text, email text, ssn text, note text, age int);
INSERT INTO people VALUES
  (1, 'Ada', 'ada@example.com', '123-45-6789', 'card 4111 1111 1111 1111 on file', 36),
  (2, 'Bob', 'bob@example.com', '987-65-4321', 'nothing to see', 41);
CREATE TABLE t (id int);
INSERT INTO t VALUES (1), (2);
CREATE TABLE audit_log (id serial, what text);
CREATE TABLE orders (id int PRIMARY KEY, item text);
INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 50) g;
CREATE TABLE refunds (id int);
INSERT INTO refunds VALUES (1);
CREATE TABLE exports (id int, label text);
INSERT INTO exports VALUES (1, 'one'), (2, 'two');
CREATE TABLE inbox (id int, body text);
"""


@dataclass
class Target:
    db: str
    roles: dict[str, str]  # kind -> role name
    passwords: dict[str, str]
    lane: bool = True  # the relay under test runs its fast lane

    def admin(self, dbname: str | None = None) -> psycopg.Connection:
        return psycopg.connect(f"{ADMIN_DSN} dbname={dbname or self.db}", autocommit=True)


@dataclass
class World:
    env: dict[str, str]
    target: Target
    tokens: dict[str, str]
    token_ids: dict[str, int]


# -- the target server ------------------------------------------------------------


def _hba_file() -> Path:
    with psycopg.connect(ADMIN_DSN) as conn:
        return Path(conn.execute("SHOW hba_file").fetchone()[0])


@contextmanager
def _hba_lines(lines: list[str], marker: str):
    """Put `lines` first in pg_hba.conf (tagged with `marker`), reload; undo on exit."""
    path = _hba_file()
    if not os.access(path, os.W_OK):
        pytest.fail(f"{path} is not writable: the relay tests need it to make the server ask for passwords "
                    "(run as root, as .ci/run does)")

    def edit(add: bool) -> None:
        with open(HBA_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            text = path.read_text()
            kept = [line for line in text.splitlines() if marker not in line]
            if add:
                kept = [f"{line}  # {marker}" for line in lines] + kept
            path.write_text("\n".join(kept) + "\n")
            with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
                conn.execute("SELECT pg_reload_conf()")

    edit(True)
    try:
        yield
    finally:
        edit(False)


@pytest.fixture(scope="session", params=["lane", "python"])
def target(request) -> Target:
    """A database of its own for each way the relay runs: with its C fast lane
    (app/relay/postgres/fastlane.py) and without it. Every relay test runs both ways, on fresh
    data, and the two must answer alike."""
    tag = secrets.token_hex(4)
    db_name = f"airlock_relay_{tag}"
    roles = {kind: f"airlock_relay_{kind}_{tag}" for kind in ("scram", "md5", "clear")}
    passwords = {kind: secrets.token_urlsafe(12) for kind in roles}
    marker = f"airlock-relay-tests-{tag}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(f"CREATE ROLE {roles['scram']} LOGIN PASSWORD '{passwords['scram']}'")
        conn.execute(f"CREATE ROLE {roles['clear']} LOGIN PASSWORD '{passwords['clear']}'")
        conn.execute("SET password_encryption = 'md5'")
        conn.execute(f"CREATE ROLE {roles['md5']} LOGIN PASSWORD '{passwords['md5']}'")
        conn.execute(f"CREATE DATABASE {db_name} OWNER {roles['scram']}")
    tgt = Target(db_name, roles, passwords, lane=request.param == "lane")
    with tgt.admin() as conn:
        conn.execute(f"SET ROLE {roles['scram']}")
        conn.execute(SCHEMA)
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {roles['md5']}, {roles['clear']}")
    methods = {"scram": "scram-sha-256", "md5": "md5", "clear": "password"}
    lines = [f"host all {roles[k]} 127.0.0.1/32 {methods[k]}" for k in roles]
    try:
        with _hba_lines(lines, marker):
            _wait_for_password_auth(roles["scram"])
            yield tgt
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            for role in roles.values():
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def _wait_for_password_auth(role: str) -> None:
    """pg_reload_conf() signals the postmaster; wait until a password-less login fails."""
    for _ in range(100):
        try:
            psycopg.connect(f"host=127.0.0.1 port=5432 user={role} dbname=postgres", connect_timeout=2).close()
        except psycopg.OperationalError as exc:
            if "password" in str(exc):
                return
        time.sleep(0.05)
    pytest.fail("the server kept trusting the test role after pg_hba.conf was changed")


# -- the store and the relay ------------------------------------------------------


@pytest.fixture(scope="session")
def world(tmp_path_factory, sqlite_template, target) -> World:
    with suite_store(tmp_path_factory.mktemp("pgrelay"), sqlite_template) as env:
        secrets_env = {f"PG_{k.upper()}_PASSWORD": v for k, v in target.passwords.items()}
        tokens, ids = support.seed(POLICY.format(db=target.db, **target.roles), secrets_env,
                                   ("agent", "stranger", "revokee"))
        yield World(env, target, tokens, ids)


def start_relay(world: World, **extra: str) -> Relay:
    """`airlock relay` for `world`'s target, with its fast lane or without as the
    target's tests run."""
    lane = {"AIRLOCK_RELAY_FASTLANE": "1" if world.target.lane else "0"}
    return support.start_relay("postgres", world.env, **{**lane, **extra})


@pytest.fixture(scope="session")
def relay(world) -> Relay:
    yield from support.running(start_relay(world))


@pytest.fixture
def agent(world) -> str:
    return world.tokens["agent"]


def dsn(relay: Relay, token: str, connection: str = "app", user: str = "agent", sslmode: str = "require",
        **params: str) -> str:
    extra = " ".join(f"{k}={v}" for k, v in params.items())
    return (f"host={relay.host} port={relay.port} dbname={connection} user={user} password={token} "
            f"sslmode={sslmode} connect_timeout=10 {extra}").strip()


def psql(relay: Relay, token: str, *args: str, connection: str = "app", sslmode: str = "require",
         user: str = "agent", input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": token, "PGSSLMODE": sslmode, "PGCONNECT_TIMEOUT": "10"}
    cmd = ["psql", "-X", "-h", relay.host, "-p", str(relay.port), "-U", user, "-d", connection, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, input=input, timeout=timeout)


events = partial(support.events, "postgres")


def target_rows(target: Target, sql: str) -> list[tuple]:
    with target.admin() as conn:
        return conn.execute(sql).fetchall()

