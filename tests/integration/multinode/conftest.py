"""Several nodes on one real PostgreSQL store: two proxies, two relays, two portals.

Every process is a real `airlock ...` subprocess with its own port, sharing only the
store (and $AIRLOCK_HOME's CA, as a deployment distributes it). The relays' target is
a throwaway database on the local server; the proxies' upstream is the HTTPS test
upstream of the HTTP suite.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from app import db
from app.config import settings
from app.db import session_scope
from app.identity import issue_token
from app.inventory import apply_policy
from app.migrate import upgrade
from app.models import User
from app.policy import load_policy
from app.portal.security import new_api_token
from tests.conftest import PG_ADMIN_DSN, use_store
from tests.integration.http.conftest import Proxy, free_port, start_proxy, stop_proxy
from tests.integration.http.upstream import Upstream, make_tls_files, serve_in_thread
from tests.support import processes

ROOT = Path(__file__).resolve().parents[3]

POLICY = """
version: 1
service_accounts:
  - {{name: agent, groups: [agents]}}
  - {{name: worker, groups: [agents]}}
users:
  - {{email: approver@example.com, groups: [approvers], roles: [approver]}}
  - {{email: admin@example.com, roles: [admin]}}
connections:
  - {{name: db, type: postgres, address: "127.0.0.1:5432", database: {db}, username: {role},
     password: "${{env:MN_PG_PASSWORD}}", owner: approver@example.com}}
  - name: api
    type: http
    hosts: ["localhost:{port}"]
    ca_bundle: {ca}
grants:
  - {{service_account: agent, connection: db}}
  - {{service_account: agent, connection: api}}
  - {{service_account: worker, connection: db}}
  - {{service_account: worker, connection: api}}
rules:
  - name: deletes-need-review
    match: {{protocol: postgres, kind: write, tables: [orders]}}
    action: review
    approvers: {{groups: [approvers]}}
    hold: 30s
  - name: deploys-need-review
    match: {{connection: api, path: "/deploy/*"}}
    action: review
    approvers: {{groups: [approvers]}}
    hold: 30s
{extra}
"""

SCHEMA = """
CREATE TABLE orders (id int PRIMARY KEY, item text);
INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 500) g;
CREATE TABLE t (id int);
INSERT INTO t VALUES (1), (2);
"""


@dataclass
class Node:
    """One `airlock NAME` subprocess; its output is kept for failures."""

    name: str
    proc: subprocess.Popen
    port: int
    log: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        processes.stop(self.proc)  # its workers and recording writers too

    def tail(self) -> str:
        return "\n".join(self.log[-30:])


@dataclass
class Cluster:
    env: dict[str, str]
    target_db: str
    target_role: str
    target_password: str
    upstream: Upstream
    upstream_ca: Path
    tokens: dict[str, str]  # service account -> airlock token
    api_tokens: dict[str, str]  # user email -> portal API token
    proxies: list[Proxy]
    relays: list[Node]
    portals: list[Node]
    base: Path

    def policy(self, extra: str = "") -> str:
        return POLICY.format(db=self.target_db, role=self.target_role, port=self.upstream.port, ca=self.upstream_ca,
                             extra=extra)

    def apply(self, extra: str = "") -> None:
        """`airlock apply` in a process of its own, like an operator on yet another host."""
        path = self.base / f"policy-{secrets.token_hex(4)}.yaml"
        path.write_text(self.policy(extra))
        subprocess.run([sys.executable, "-m", "app.cli", "apply", "-f", str(path)], cwd=ROOT, check=True,
                       env={**os.environ, **self.env, "MN_PG_PASSWORD": self.target_password},
                       capture_output=True, timeout=60)

    def dsn(self, relay: Node, token: str, user: str = "agent", **params: str) -> str:
        extra = " ".join(f"{k}={v}" for k, v in params.items())
        return (f"host=127.0.0.1 port={relay.port} dbname=db user={user} password={token} sslmode=require "
                f"connect_timeout=10 {extra}").strip()

    def api(self, portal: Node, method: str, path: str, who: str = "approver@example.com",
            body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{portal.port}/api/v1{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.api_tokens[who]}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def target(self) -> psycopg.Connection:
        return psycopg.connect(f"{PG_ADMIN_DSN} dbname={self.target_db}", autocommit=True)


# Every node spawned for this module, whoever holds it now: a test that restarts a portal
# puts the new one in cluster.portals, and the cluster's teardown stops what is listed
# here, so a replaced, failed or test-local node is stopped all the same.
_SPAWNED: list[Node] = []


def _spawn(name: str, env: dict[str, str], ready: str, port_group: int | None = None) -> Node:
    proc = processes.popen([sys.executable, "-m", "app.cli", name], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    node = Node(name, proc, 0)
    _SPAWNED.append(node)
    started = threading.Event()

    def drain() -> None:
        for line in proc.stdout:
            node.log.append(line.rstrip())
            m = re.search(ready, line)
            if m and not started.is_set():
                if port_group is not None:
                    node.port = int(m.group(port_group))
                started.set()

    threading.Thread(target=drain, daemon=True).start()
    if not started.wait(40):
        processes.kill(proc)
        raise RuntimeError(f"{name} did not start:\n{node.tail()}")
    return node


def start_relay(env: dict[str, str], **extra: str) -> Node:
    full = {**os.environ, **env, "AIRLOCK_POSTGRES_PORT": "0", "AIRLOCK_SSH_PORT": "0", "AIRLOCK_MYSQL_PORT": "0", **extra}
    return _spawn("relay", full, r"postgres relay listening on \S+:(\d+)", 1)


def start_portal(env: dict[str, str], port: int | None = None) -> Node:
    port = port or free_port()
    full = {**os.environ, **env, "AIRLOCK_PORTAL_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    node = _spawn("portal", full, r"airlock portal on|Serving on")
    node.port = port
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=2).close()
            return node
        except OSError:
            time.sleep(0.05)
    node.stop()
    raise RuntimeError(f"the portal did not answer:\n{node.tail()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    base = tmp_path_factory.mktemp("multinode")
    tag = secrets.token_hex(4)
    store_db, target_db, role = f"airlock_mn_store_{tag}", f"airlock_mn_target_{tag}", f"airlock_mn_{tag}"
    password = secrets.token_urlsafe(12)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{store_db}"')
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {target_db} OWNER {role}")
    with psycopg.connect(f"{PG_ADMIN_DSN} dbname={target_db}", autocommit=True) as conn:
        conn.execute(f"SET ROLE {role}")
        conn.execute(SCHEMA)
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{store_db}"
    upgrade(url)
    home = base / "home"
    home.mkdir()
    env = {
        "AIRLOCK_HOME": str(home), "AIRLOCK_DATABASE_URL": url,
        "AIRLOCK_SECRET_KEY": Fernet.generate_key().decode(), "AIRLOCK_PUBLIC_URL": "http://portal.test",
        "AIRLOCK_RECORD_FLUSH_SECONDS": "0.1", "AIRLOCK_RELAY_WORKERS": "2",
    }
    saved = {k: os.environ.get(k) for k in env}
    use_store(env)
    ca, cert, key = make_tls_files(base)
    upstream = Upstream()
    server = serve_in_thread(upstream, cert, key)
    proxies: list[Proxy] = []
    try:
        tokens, api_tokens = {}, {}
        with session_scope() as s:
            apply_policy(s, load_policy(POLICY.format(db=target_db, role=role, port=upstream.port, ca=ca, extra="")),
                         actor="test", environ={"MN_PG_PASSWORD": password})
            for name in ("agent", "worker"):
                tokens[name] = issue_token(s, name, timedelta(hours=2)).token
            for user in s.scalars(select(User)):
                token, digest = new_api_token()
                user.api_token_hash = digest
                api_tokens[user.email] = token
        for i in range(2):
            proxies.append(start_proxy(env, base / f"proxy-{i}.log"))
        relays = [start_relay(env) for _ in range(2)]
        portals = [start_portal(env) for _ in range(2)]
        yield Cluster(env, target_db, role, password, upstream, ca, tokens, api_tokens, proxies, relays, portals, base)
    finally:
        for proxy in proxies:
            stop_proxy(proxy)
        while _SPAWNED:
            _SPAWNED.pop().stop()
        server.should_exit = True
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        settings.cache_clear()
        db.reset_engines()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{store_db}" WITH (FORCE)')
            conn.execute(f"DROP DATABASE IF EXISTS {target_db} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(autouse=True)
def _store(request):
    if "cluster" in request.fixturenames:
        use_store(request.getfixturevalue("cluster").env)
    yield
