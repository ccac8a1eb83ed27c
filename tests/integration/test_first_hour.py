"""The first hour, as a new user lives it: `airlock env` output sourced into a real shell
sends curl (http and https), Python requests and psql through a real `airlock proxy` and
`airlock relay`, with nothing else set up; `default: review` holds what no rule covers.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from sqlalchemy import select

from app.approvals import vote
from app.db import session_scope
from app.inventory import apply_policy
from app.models import Review
from app.policy import load_policy
from tests.conftest import suite_store, use_store
from tests.integration.http.conftest import free_port, start_proxy, stop_proxy
from tests.integration.http.upstream import Upstream, make_tls_files, serve_in_thread
from tests.integration.postgres.conftest import ADMIN_DSN, start_relay, stop_relay, wait_for

ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "first-hour-upstream-token-42"
PLAIN_KEY = "first-hour-plain-key-17"

POLICY = """
version: 1
service_accounts:
  - {{name: agent}}
users:
  - {{email: approver@example.com, groups: [approvers]}}
connections:
  - name: api
    type: http
    hosts: ["localhost:{port}"]
    ca_bundle: {ca}
    inject: {{headers: {{Authorization: "Bearer ${{env:API_TOKEN}}"}}}}
  - name: plain
    type: http
    hosts: ["localhost:{plain_port}"]
    inject: {{headers: {{X-Plain-Key: "${{env:PLAIN_KEY}}"}}}}
  - name: guarded                    # the same upstream by address; what no rule covers is held
    type: http
    hosts: ["127.0.0.1:{port}"]
    ca_bundle: {ca}
    default: review
    owner: "group:approvers"
  - {{name: app-db, type: postgres, address: "127.0.0.1:5432", database: {db}, username: postgres, default: review}}
grants:
  - {{service_account: agent, connection: api}}
  - {{service_account: agent, connection: plain}}
  - {{service_account: agent, connection: guarded}}
  - {{service_account: agent, connection: app-db}}
rules:
  - name: reads-are-fine
    match: {{connection: guarded, method: GET}}
    action: allow
  - name: sql-reads
    match: {{connection: app-db, kind: [read]}}
    action: allow
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sqlite_template):
    """One store, a proxy and a relay on free ports, two upstreams and a scratch database."""
    base = tmp_path_factory.mktemp("first-hour")
    db = f"airlock_first_hour_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    try:
        with suite_store(base, sqlite_template) as env:
            ca, cert, key = make_tls_files(base)
            upstream, plain = Upstream(), Upstream()
            servers = [serve_in_thread(upstream, cert, key), serve_in_thread(plain, None, None)]
            with session_scope() as s:
                apply_policy(s, load_policy(POLICY.format(port=upstream.port, plain_port=plain.port, ca=ca, db=db)),
                             actor="test", environ={"API_TOKEN": API_TOKEN, "PLAIN_KEY": PLAIN_KEY})
            proxy = start_proxy(env, base / "proxy.log")
            try:  # a relay that fails to start must not leave the proxy running
                relay = start_relay(SimpleNamespace(env=env, target=SimpleNamespace(lane=True)),
                                    AIRLOCK_POSTGRES_PORT=str(free_port()))
                try:
                    yield SimpleNamespace(env=env, upstream=upstream, plain=plain, proxy=proxy, relay=relay, db=db)
                finally:
                    stop_relay(relay)
            finally:
                stop_proxy(proxy)
                for server in servers:
                    server.should_exit = True
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@pytest.fixture(autouse=True)
def _store(stack):
    use_store(stack.env)


def airlock_env(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.env, "AIRLOCK_PROXY_PORT": str(stack.proxy.port),
           "AIRLOCK_POSTGRES_PORT": str(stack.relay.port), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "app.cli", "env", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)


def in_clean_shell(exports: str, script: str, shell: str = "bash") -> subprocess.CompletedProcess:
    """`script` in a shell whose only set-up is `exports`: no proxy, CA or PG variable of ours."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    return subprocess.run([shell, "-c", f'eval "$AIRLOCK_EXPORTS"\n{script}'], capture_output=True, text=True,
                          env={**env, "AIRLOCK_EXPORTS": exports}, timeout=120)


def test_sourced_env_sends_curl_requests_and_psql_through_airlock(stack):
    out = airlock_env(stack, "agent", "--token-ttl", "30m")
    assert out.returncode == 0, out.stderr
    assert "expires" in out.stderr
    https_path, http_path, req_path = (f"/echo/first-hour-{what}-{uuid.uuid4().hex[:8]}"
                                       for what in ("curl-https", "curl-http", "requests"))
    script = f"""
set -e
curl -sS --fail-with-body --max-time 30 https://localhost:{stack.upstream.port}{https_path}
echo
curl -sS --fail-with-body --max-time 30 http://localhost:{stack.plain.port}{http_path}
echo
{sys.executable} -c 'import requests; print(requests.get("https://localhost:{stack.upstream.port}{req_path}", timeout=30).status_code)'
psql -X -At "$AIRLOCK_PG_APP_DB" -c "select 'through the relay', current_database()" -c "begin" -c "commit"
"""
    run = in_clean_shell(out.stdout, script)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"through the relay|{stack.db}" in run.stdout
    # Each request reached its upstream with the credential only airlock holds.
    for path in (https_path, req_path):
        (seen,) = stack.upstream.requests_to(path)
        assert seen["headers"]["authorization"] == f"Bearer {API_TOKEN}"
    (seen,) = stack.plain.requests_to(http_path)
    assert seen["headers"]["x-plain-key"] == PLAIN_KEY
    # The CA is the only one trusted: a client that went around the proxy would fail TLS, not succeed.
    direct = in_clean_shell(out.stdout, f"curl -sS --noproxy '*' https://localhost:{stack.upstream.port}/echo/direct")
    assert direct.returncode != 0 and stack.upstream.requests_to("/echo/direct") == []


def test_every_shell_gets_the_same_variables(stack):
    sh = airlock_env(stack, "agent", "--shell", "sh")
    dotenv = airlock_env(stack, "agent", "--shell", "dotenv")
    assert sh.returncode == 0 and dotenv.returncode == 0
    names = [line.split("=", 1)[0] for line in dotenv.stdout.splitlines()]
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "SSL_CERT_FILE",
                 "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PGSSLROOTCERT", "CURL_CA_BUNDLE", "AIRLOCK_PG_APP_DB"):
        assert name in names, name
    assert dict(line.split("=", 1) for line in dotenv.stdout.splitlines())["NO_PROXY"] == "portal.test"
    # sh output round-trips through a real shell to exactly the dotenv values (other token aside).
    printed = in_clean_shell(sh.stdout, "env")
    values = dict(line.split("=", 1) for line in printed.stdout.splitlines() if "=" in line)
    assert values["SSL_CERT_FILE"] == str(Path(stack.env["AIRLOCK_HOME"]) / "ca" / "airlock-ca.pem")
    assert values["HTTP_PROXY"].startswith("http://agent:alk_") and values["HTTP_PROXY"] == values["http_proxy"]
    ps = airlock_env(stack, "agent", "--shell", "powershell")
    assert ps.returncode == 0 and all(line.startswith("$env:") for line in ps.stdout.splitlines())
    fish = airlock_env(stack, "agent", "--shell", "fish")
    assert fish.returncode == 0 and all(line.startswith("set -gx ") for line in fish.stdout.splitlines())


def test_env_refuses_an_unknown_service_account_and_issues_nothing(stack):
    out = airlock_env(stack, "nobody")
    assert out.returncode != 0 and "nobody" in out.stderr and out.stdout == ""


def test_default_review_holds_a_request_no_rule_covers_until_it_is_approved(stack):
    out = airlock_env(stack, "agent")
    held_path = f"/echo/first-hour-held-{uuid.uuid4().hex[:8]}"
    base = f"https://127.0.0.1:{stack.upstream.port}"
    result: dict = {}

    def post() -> None:
        result["run"] = in_clean_shell(out.stdout, f"curl -sS --max-time 60 -X POST -d x=1 -w '\\n%{{http_code}}' "
                                                   f"{base}{held_path}")

    worker = threading.Thread(target=post)
    worker.start()

    def review():
        with session_scope() as s:
            return s.scalars(select(Review).where(Review.operation.contains(held_path))).first()

    held = wait_for(review, timeout=30)
    assert held is not None, "the unmatched POST was not held"
    assert held.rule == "default" and held.groups == ["approvers"]
    assert stack.upstream.requests_to(held_path) == []  # nothing reached the upstream while held
    with session_scope() as s:
        vote(s, held.id, voter_email="approver@example.com", decision="approve", reason="first hour")
    worker.join(90)
    run = result["run"]
    assert run.stdout.strip().endswith("200"), run.stdout + run.stderr
    assert len(stack.upstream.requests_to(held_path)) == 1
    # A GET matches the allow rule and is not held.
    get = in_clean_shell(out.stdout, f"curl -sS --max-time 30 -o /dev/null -w '%{{http_code}}' {base}/echo/read")
    assert get.stdout == "200", get.stdout + get.stderr
