"""The MySQL relay end to end, against the real MariaDB at 127.0.0.1:3306.

Session fixtures:
- `target`: a throwaway database and a login with a password (the vault credential);
- `world`: a migrated SQLite store with the policy below and tokens;
- `relay`: `airlock relay` in a subprocess on free ports (AIRLOCK_MYSQL_PORT=0).
"""
from __future__ import annotations

import secrets
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial

import pymysql
import pytest

from tests.conftest import suite_store
from tests.support import relay as support
from tests.support.relay import ROOT, Relay, _store, stop_relay, wait_for  # noqa: F401 - fixtures and the suite's API

ADMIN = dict(host="127.0.0.1", port=3306, user="root", password="")

POLICY = """
version: 1
service_accounts:
  - {{name: agent, groups: [agents]}}
  - {{name: stranger}}
  - {{name: revokee}}
  - {{name: leaver}}
users:
  - {{email: dba@example.com, groups: [dba], roles: [approver]}}
connections:
  - {{name: app, type: mysql, address: "127.0.0.1:3306", database: {db}, username: {user},
     password: "${{env:MY_PASSWORD}}", owner: dba@example.com}}
  - {{name: {db}, type: mysql, address: "127.0.0.1:3306", database: {db}, username: {user},
     password: "${{env:MY_PASSWORD}}", owner: dba@example.com}}
grants:
  - {{service_account: agent, connection: app}}
  - {{service_account: agent, connection: {db}}}
  - {{service_account: revokee, connection: app}}
  - {{service_account: leaver, connection: app}}
rules:
  - name: no-schema-changes
    match: {{protocol: mysql, kind: [ddl, dcl, admin]}}
    action: deny
    message: schema and privilege changes go through migrations
  - name: audit-log-is-append-never
    match: {{protocol: mysql, kind: write, tables: [audit_log]}}
    action: deny
    message: nobody writes the audit log by hand
  - name: orders-need-a-dba
    match: {{protocol: mysql, kind: write, tables: [orders]}}
    action: review
    approvers: {{groups: [dba]}}
    hold: 30s
  - name: refunds-need-a-dba
    match: {{protocol: mysql, kind: write, tables: [refunds]}}
    action: review
    approvers: {{groups: [dba]}}
    hold: 1s
  - name: mask-pii
    match: {{protocol: mysql, tables: [people]}}
    action: mask
    fields: [email, ssn, age]
  - name: mask-cards
    match: {{protocol: mysql, tables: [people]}}
    action: mask
    detectors: [credit_card]
"""

SCHEMA = [
    "CREATE TABLE people (id int PRIMARY KEY, name varchar(50), email varchar(80), ssn varchar(20), "
    "note text, age int)",
    "INSERT INTO people VALUES (1, 'Ada', 'ada@example.com', '123-45-6789', 'card 4111 1111 1111 1111 on file', 36),"
    " (2, 'Bob', 'bob@example.com', '987-65-4321', 'nothing to see', 41)",
    "CREATE TABLE t (id int AUTO_INCREMENT PRIMARY KEY, v varchar(20))",
    "INSERT INTO t (v) VALUES ('one'), ('two')",
    "CREATE TABLE audit_log (id int AUTO_INCREMENT PRIMARY KEY, what text)",
    "CREATE TABLE orders (id int PRIMARY KEY, item text)",
    "INSERT INTO orders VALUES (1, 'item 1'), (2, 'item 2'), (3, 'item 3')",
    "CREATE TABLE refunds (id int)",
    "INSERT INTO refunds VALUES (1)",
    "CREATE TABLE kinds (i tinyint, si smallint, u int unsigned, b bigint, f float, d double, "
    "dec1 decimal(20,6), dt date, tm time(3), ts datetime(6), y year, bin varbinary(20), blb blob, "
    "txt text CHARACTER SET utf8mb4, js json, e enum('a','b'), bits bit(8))",
]


@dataclass
class Target:
    db: str
    user: str
    password: str

    def admin(self):
        return pymysql.connect(**ADMIN, database=self.db, autocommit=True)


@dataclass
class World:
    env: dict[str, str]
    target: Target
    tokens: dict[str, str]
    token_ids: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="session")
def target() -> Target:
    tag = secrets.token_hex(4)
    tgt = Target(f"airlock_my_{tag}", f"airlock_my_{tag}", secrets.token_urlsafe(12))
    with pymysql.connect(**ADMIN, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {tgt.db} CHARACTER SET utf8mb4")
        cur.execute(f"CREATE USER '{tgt.user}'@'%' IDENTIFIED BY '{tgt.password}'")
        cur.execute(f"GRANT ALL ON {tgt.db}.* TO '{tgt.user}'@'%'")
    with tgt.admin() as conn, conn.cursor() as cur:
        for sql in SCHEMA:
            cur.execute(sql)
    try:
        yield tgt
    finally:
        with pymysql.connect(**ADMIN, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {tgt.db}")
            cur.execute(f"DROP USER IF EXISTS '{tgt.user}'@'%'")


@pytest.fixture(scope="session")
def world(tmp_path_factory, sqlite_template, target) -> World:
    with suite_store(tmp_path_factory.mktemp("myrelay"), sqlite_template) as env:
        tokens, ids = support.seed(POLICY.format(db=target.db, user=target.user), {"MY_PASSWORD": target.password},
                                   ("agent", "stranger", "revokee", "leaver"))
        yield World(env, target, tokens, ids)


def start_relay(world: World, **extra: str) -> Relay:
    relay = support.start_relay("mysql", world.env, **{"AIRLOCK_RELAY_WORKERS": "1", **extra})
    _wait_accepting(relay)
    return relay


def _wait_accepting(relay: Relay) -> None:
    """The listener is bound before the relay says so; wait for its server greeting."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((relay.host, relay.port), timeout=1) as s:
                if s.recv(1):
                    return
        except OSError:
            time.sleep(0.05)
    pytest.fail("the mysql relay does not answer:\n" + relay.tail())


@pytest.fixture(scope="session")
def relay(world) -> Relay:
    yield from support.running(start_relay(world))


@pytest.fixture(scope="session")
def python_relay(world) -> Relay:
    """A relay without its fast lane (AIRLOCK_RELAY_FASTLANE=0): every command takes the Python path."""
    yield from support.running(start_relay(world, AIRLOCK_RELAY_FASTLANE="0"))


@pytest.fixture(params=["lane", "python"])
def any_relay(request, world) -> Relay:
    """Each test that takes it runs against a relay with its lane and one without."""
    if request.param == "lane":
        return request.getfixturevalue("relay")
    return request.getfixturevalue("python_relay")


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(relay: Relay, token: str, connection: str = "app", user: str = "agent", **kw) -> pymysql.Connection:
    """PyMySQL through the relay, TLS on (the token is a password)."""
    kw.setdefault("ssl", client_tls())
    return pymysql.connect(host=relay.host, port=relay.port, user=user, password=token, database=connection,
                           connect_timeout=10, read_timeout=60, autocommit=True, **kw)


def mysql_cli(relay: Relay, token: str, sql: str, connection: str = "app", user: str = "agent",
              *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = ["mysql", "-h", relay.host, "-P", str(relay.port), "-u", user, f"-p{token}", "--ssl",
           "--ssl-verify-server-cert=0" if _mariadb_client() else "--ssl-mode=REQUIRED",
           "--enable-cleartext-plugin", "--batch", *extra, connection, "-e", sql]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _mariadb_client() -> bool:
    out = subprocess.run(["mysql", "--version"], capture_output=True, text=True).stdout
    return "MariaDB" in out


events = partial(support.events, "mysql")
