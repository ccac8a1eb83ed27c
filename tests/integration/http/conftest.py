"""The HTTP gateway end to end: a local HTTPS upstream, `airlock proxy` in a subprocess on
a free port, a migrated store with a policy, and real clients (curl, requests, httpx).

The store and the proxy live for the whole session (starting mitmproxy takes a second);
tests keep apart by using paths of their own. Tests that need a broken or separate
store start their own proxy with `start_proxy`.
"""
from __future__ import annotations

import re
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import requests

from app.ca import ensure_ca
from app.db import session_scope
from app.identity import issue_token
from app.inventory import apply_policy
from app.policy import load_policy

from tests.conftest import suite_store, use_store
from tests.support import processes
from tests.integration.http.upstream import H2Upstream, RawUpstream, Upstream, make_tls_files, serve_in_thread

UPSTREAM_TOKEN = "upstream-secret-token-0123456789"
UPSTREAM_KEY = "key-9f8e7d6c5b4a"

POLICY = """
version: 1
service_accounts:
  - {{name: agent, groups: [agents]}}
  - {{name: intruder}}
  - {{name: revokee}}
users:
  - {{email: approver@example.com, groups: [approvers]}}
connections:
  - name: api
    type: http
    hosts: ["localhost:{port}"]
    ca_bundle: {ca}
    inject:
      headers:
        Authorization: "Bearer ${{env:UPSTREAM_TOKEN}}"
        X-Api-Key: "${{env:UPSTREAM_KEY}}"
  - name: plain
    type: http
    hosts: ["localhost:{plain_port}"]
    path_case_sensitive: true  # as a case-sensitive upstream would declare it
  - name: raw                # a socket-level upstream (trailers, odd header bytes)
    type: http
    hosts: ["localhost:{raw_port}"]
  - name: h2only             # an HTTP/2-only upstream that sends trailers
    type: http
    hosts: ["localhost:{h2_port}"]
    ca_bundle: {ca}
  - name: untrusted          # the same upstream by address, without its CA
    type: http
    hosts: ["127.0.0.1:{port}"]
grants:
  - {{service_account: agent, connection: api}}
  - {{service_account: agent, connection: plain}}
  - {{service_account: agent, connection: untrusted}}
  - {{service_account: agent, connection: raw}}
  - {{service_account: agent, connection: h2only}}
  - {{service_account: revokee, connection: api}}
rules:
  - name: no-admin
    match: {{connection: [api, plain, raw], path: ["/admin", "/admin/*"]}}
    action: deny
    message: the admin API is off limits
  - name: no-delete
    match: {{connection: [api, plain, raw], method: [DELETE]}}
    action: deny
  - name: no-drop
    match: {{connection: api, body: {{"$.action": "drop*"}}}}
    action: deny
    message: dropping is not allowed
  - name: no-ws-admin
    match: {{connection: api, path: "/ws/admin*"}}
    action: deny
  - name: deploys-need-approval
    match: {{connection: api, path: "/deploy/*"}}
    action: review
    approvers: {{groups: [approvers]}}
    hold: 30s
  - name: quick-review
    match: {{connection: api, path: "/quick/*"}}
    action: review
    approvers: {{groups: [approvers]}}
    hold: 1s
  - name: many-review
    match: {{connection: api, path: "/many/*"}}
    action: review
    approvers: {{groups: [approvers]}}
    hold: 20s
  - name: mask-pii
    match: {{connection: api}}
    action: mask
    fields: [ssn, password]
    detectors: [email]
    unmasked_types: ["image/png", "image/x-*"]
  - name: mask-raw
    match: {{connection: raw, path: "/trailers/masked*"}}
    action: mask
    detectors: [email]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proxy:
    port: int
    ca: Path
    proc: subprocess.Popen
    log: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def url(self, user: str | None = None, token: str | None = None) -> str:
        auth = f"{user}:{token}@" if token else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def requests(self, token: str | None, user: str = "agent") -> requests.Session:
        s = requests.Session()
        s.proxies = {"http": self.url(user, token), "https": self.url(user, token)}
        s.verify = str(self.ca)
        s.trust_env = False
        return s

    def httpx(self, token: str | None, user: str = "agent", **kw) -> httpx.Client:
        return httpx.Client(proxy=self.url(user, token), verify=ssl.create_default_context(cafile=str(self.ca)),
                            trust_env=False, timeout=60, **kw)

    def curl(self, token: str | None, *args: str, user: str = "agent") -> subprocess.CompletedProcess:
        """curl through the proxy; stdout ends with a line holding the status code."""
        cmd = ["curl", "-sS", "--max-time", "60", "--cacert", str(self.ca), "-x", self.url(user, token),
               "-w", "\n%{http_code}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def check(self, since: int, when: str) -> None:
        """Fail with the proxy's own words if it exited, or one of its workers died (the
        parent restarts it, but the flows that worker held are gone), since byte `since`
        of its log: every later test would otherwise fail with connection errors that
        do not say why."""
        code = self.proc.poll()
        with open(self.log, "rb") as f:
            f.seek(since)
            new = f.read().decode(errors="replace")
        if code is not None:
            pytest.fail(f"the shared proxy exited with status {code} {when}; its log ends:\n{self.tail()}",
                        pytrace=False)
        if WORKER_DIED.search(new):
            pytest.fail(f"a worker of the shared proxy died {when}; its log from then:\n{new[-4000:]}",
                        pytrace=False)


WORKER_DIED = re.compile(r"proxy worker \d+ (ended|failed)")  # app/relay/workers.py


def start_proxy(env: dict[str, str], log: Path, attempts: int = 3) -> Proxy:
    """`airlock proxy` in a subprocess on a free port (retried if another suite takes it)."""
    ca = ensure_ca(Path(env["AIRLOCK_HOME"]) / "ca")
    for _ in range(attempts):
        port = free_port()
        penv = {**env, "AIRLOCK_PROXY_PORT": str(port), "AIRLOCK_BIND": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
        with open(log, "ab") as out:  # the child writes to its own copy
            proc = processes.popen([sys.executable, "-m", "app.cli", "proxy"], env=penv, stdout=out, stderr=out,
                                   cwd=Path(__file__).resolve().parents[3])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if b"listening on" in log.read_bytes():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    return Proxy(port, ca, proc, log, penv)
                except OSError:
                    pass
            time.sleep(0.05)
        stop_proxy(Proxy(port, ca, proc, log))
    raise RuntimeError(f"the proxy did not start:\n{log.read_text(errors='replace')[-3000:]}")


def stop_proxy(proxy: Proxy) -> None:
    processes.stop(proxy.proc)  # SIGTERM, then its worker processes too if it does not stop


@dataclass
class World:
    env: dict[str, str]
    upstream: Upstream
    plain: Upstream
    raw: RawUpstream
    h2: H2Upstream
    upstream_ca: Path
    tokens: dict[str, str]
    token_ids: dict[str, int]


_use = use_store  # the suite's tests import it under this name


@pytest.fixture(scope="session")
def world(tmp_path_factory, sqlite_template) -> World:
    base = tmp_path_factory.mktemp("http")
    with suite_store(base, sqlite_template) as env:
        ca, cert, key = make_tls_files(base)
        upstream, plain = Upstream(), Upstream()
        servers = [serve_in_thread(upstream, cert, key), serve_in_thread(plain, None, None)]
        raw, h2 = RawUpstream(), H2Upstream(cert, key)
        policy = POLICY.format(port=upstream.port, plain_port=plain.port, raw_port=raw.port, h2_port=h2.port, ca=ca)
        tokens, ids = {}, {}
        with session_scope() as s:
            apply_policy(s, load_policy(policy), actor="test",
                         environ={"UPSTREAM_TOKEN": UPSTREAM_TOKEN, "UPSTREAM_KEY": UPSTREAM_KEY})
            for name in ("agent", "intruder", "revokee"):
                issued = issue_token(s, name, timedelta(hours=2))
                tokens[name], ids[name] = issued.token, issued.id
        yield World(env, upstream, plain, raw, h2, ca, tokens, ids)
        for server in servers:
            server.should_exit = True
        raw.close()
        h2.close()


@pytest.fixture(autouse=True)
def _store(world):
    _use(world.env)
    yield


@pytest.fixture(scope="session")
def proxy(world, tmp_path_factory) -> Proxy:
    p = start_proxy(world.env, tmp_path_factory.mktemp("proxy-log") / "proxy.log")
    yield p
    stop_proxy(p)


@pytest.fixture(autouse=True)
def _proxy_alive(request):
    """Every test of the shared proxy starts with it alive and leaves it so: a test that
    kills it fails, naming the cause; the tests after it fail at once with the same."""
    if "proxy" not in request.fixturenames:
        yield
        return
    proxy = request.getfixturevalue("proxy")
    since = proxy.log_size()
    proxy.check(since, "before this test")  # a worker that died earlier was reported then
    yield
    proxy.check(since, "during this test")


def _store_problem(env: dict[str, str]) -> str | None:
    """What SQLite's quick_check finds wrong with the suite's store, or None."""
    path = env["AIRLOCK_DATABASE_URL"].removeprefix("sqlite:///")
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:  # too broken to check ("database disk image is malformed")
        return str(exc)
    return None if rows == ["ok"] else "\n".join(rows[:10])


@pytest.fixture(autouse=True)
def _store_intact(world):
    """The suite's store is shared by every proxy it starts: a test after which it is
    corrupt fails, naming the cause, instead of the shared proxy answering 503 (as it
    must) to every later test."""
    problem = _store_problem(world.env)
    if problem:
        pytest.fail(f"the suite's store was corrupt before this test:\n{problem}", pytrace=False)
    yield
    problem = _store_problem(world.env)
    if problem:
        pytest.fail(f"the suite's store is corrupt after this test:\n{problem}", pytrace=False)


@pytest.fixture
def agent(world) -> str:
    return world.tokens["agent"]


@pytest.fixture
def api(world) -> str:
    return f"https://localhost:{world.upstream.port}"
