"""Load: many runtime connections at once, mixed HTTP and PostgreSQL, some held and
approved by a scripted approver through the portal API; then the evidence is checked.

    .venv/bin/python bench/load.py [--seconds 60] [--connections 200] [--held 0.05]
                                   [--http-share 0.5] [--store postgres|sqlite] [--json]

It starts `airlock proxy`, `airlock relay` and `airlock portal` (workers per core) on a
fresh store, a local HTTPS upstream (bench/https_load.c, built with gcc; uvicorn with
--python-upstream) and a throwaway target database, then runs the
connections from one client process for --seconds. Each connection repeats one
operation after another, every one carrying a unique marker; about --held of them hit
a review rule and wait until the approver (a thread polling the API) approves.

Reported: throughput, p50/p99 latency of the allowed (not held) operations, the time
from hold to release, and refusals: 403 (denied, or a hold that timed out) and 503
(airlock could not decide: a store or IdP failure, refused before anything is recorded). Checked afterwards, with every process stopped: every operation
that got an answer appears in its session's recording (or, refused, in the audit), every
recording's digest matches and the chain verifies (`audit.verify`). Exit 1 if not.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, build_https_load, free_port, open_tunnel, read_answer, start_upstream, wait_port  # noqa: E402

sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("AIRLOCK_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")

POLICY = """
version: 1
service_accounts: [{{name: load, groups: [agents]}}]
users: [{{email: approver@example.com, groups: [approvers], roles: [approver]}}]
connections:
  - {{name: db, type: postgres, address: "127.0.0.1:5432", database: {db}, username: {role},
     password: "${{env:LOAD_PG_PASSWORD}}"}}
  - {{name: api, type: http, hosts: ["localhost:{port}"], ca_bundle: {ca}}}
grants:
  - {{service_account: load, connection: db}}
  - {{service_account: load, connection: api}}
rules:
  - {{name: ledger-writes, match: {{protocol: postgres, kind: write}}, action: review,
     approvers: {{groups: [approvers]}}, hold: 60s}}
  - {{name: deploys, match: {{connection: api, path: "/deploy/*"}}, action: review,
     approvers: {{groups: [approvers]}}, hold: 60s}}
  - {{name: reads, match: {{connection: api, kind: read}}, action: allow}}
"""


class Stats:
    def __init__(self) -> None:
        self.allowed: list[float] = []  # seconds, operations that were not held
        self.held: list[float] = []  # seconds from sending to the answer, held operations
        self.markers: dict[str, str] = {}  # marker -> "ok" | "refused" | "error"
        self.errors: list[str] = []


# -- the runtimes ----------------------------------------------------------------------

async def http_runtime(n: int, args, stats: Stats, deadline: float) -> None:
    host = f"localhost:{args.upstream_port}"
    reader, writer = await open_tunnel(args.proxy_port, host, args.auth, args.context)
    seq = 0
    while time.perf_counter() < deadline:
        seq += 1
        marker = f"h{n}x{seq}"
        held = random.random() < args.held
        if held:
            body = json.dumps({"marker": marker}).encode()
            request = (f"POST /deploy/{marker} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        else:
            request = f"GET /item/{marker} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        start = time.perf_counter()
        writer.write(request)
        head = await read_answer(reader)
        took = time.perf_counter() - start
        status = head.split(b" ", 2)[1].decode()
        if status != "200":
            # 403: denied or still pending, recorded by the gate; 503: airlock could not
            # decide (the store or IdP failed), refused before anything could be recorded.
            stats.markers[marker] = "unavailable" if status == "503" else "refused"
            continue
        stats.markers[marker] = "ok-held" if held else "ok"
        (stats.held if held else stats.allowed).append(took)
    writer.close()


async def pg_runtime(n: int, args, stats: Stats, deadline: float) -> None:
    import psycopg

    conn = await psycopg.AsyncConnection.connect(
        f"host=127.0.0.1 port={args.relay_port} dbname=db user=load password={args.token} sslmode=require "
        f"application_name=load-{n}", autocommit=True)
    seq = 0
    try:
        while time.perf_counter() < deadline:
            seq += 1
            marker = f"p{n}x{seq}"
            held = random.random() < args.held
            # A table per connection: an approval is matched by statement shape, so each
            # connection's writes have a shape of their own.
            sql = f"INSERT INTO ledger_{n % args.tables} VALUES ('{marker}')" if held else f"SELECT '{marker}'"
            start = time.perf_counter()
            try:
                await conn.execute(sql)
            except psycopg.Error as exc:
                if exc.sqlstate not in ("42501", "58000", "57P03"):
                    raise
                stats.markers[marker] = "refused" if exc.sqlstate == "42501" else "unavailable"
                continue
            took = time.perf_counter() - start
            stats.markers[marker] = "ok-held" if held else "ok"
            (stats.held if held else stats.allowed).append(took)
    finally:
        await conn.close()


async def guarded(coro, stats: Stats) -> None:
    try:
        await coro
    except Exception as exc:  # noqa: BLE001 - counted, reported
        stats.errors.append(f"{type(exc).__name__}: {exc}"[:300])


async def run_load(args, stats: Stats) -> None:
    args.context = ssl.create_default_context(cafile=args.ca)
    deadline = time.perf_counter() + args.seconds
    n_http = round(args.connections * args.http_share)
    tasks = [guarded(http_runtime(i, args, stats, deadline), stats) for i in range(n_http)]
    tasks += [guarded(pg_runtime(i, args, stats, deadline), stats) for i in range(args.connections - n_http)]
    await asyncio.gather(*tasks)


# -- the approver ----------------------------------------------------------------------

def approver(portal_port: int, token: str, stop: threading.Event, counts: dict) -> None:
    def call(method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{portal_port}/api/v1{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    while not stop.is_set():
        try:
            for item in call("GET", "/reviews?status=pending")["items"]:
                try:
                    call("POST", f"/reviews/{item['id']}/vote", {"decision": "approve"})
                    counts["approved"] += 1
                except urllib.error.HTTPError:
                    counts["vote_refused"] += 1  # decided meanwhile
        except Exception as exc:  # noqa: BLE001 - keep approving
            counts["errors"] += 1
            counts["last_error"] = str(exc)
        stop.wait(0.05)


def watch_server(stop: threading.Event, seen: dict) -> None:
    """The PostgreSQL server's busiest moment: the store, the targets and every pool share
    its max_connections."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        seen["max_connections"] = int(conn.execute("SHOW max_connections").fetchone()[0])
        while not stop.is_set():
            n = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0]
            seen["peak_connections"] = max(seen.get("peak_connections", 0), n)
            stop.wait(0.5)


# -- the evidence ----------------------------------------------------------------------

def check_evidence(stats: Stats) -> dict:
    from sqlalchemy import select

    from app import audit
    from app.db import session_scope
    from app.models import AuditEntry, RecordedSession, SessionEvent

    found: set[str] = set()
    with session_scope() as s:
        unsealed = s.scalar(select(RecordedSession.id).where(RecordedSession.ended_at.is_(None)).limit(1))
        for (data,) in s.execute(select(SessionEvent.data).execution_options(yield_per=5000)):
            found.update(_markers(data))
        for (data,) in s.execute(select(AuditEntry.data).where(AuditEntry.action == "decision.deny")):
            found.update(_markers(json.dumps(data)))
        result = audit.verify(s)
    answered = [m for m, outcome in stats.markers.items() if outcome in ("ok", "ok-held", "refused")]
    missing = [m for m in answered if m not in found]
    return {"operations_answered": len(answered), "missing_from_recordings": len(missing),
            "missing_examples": [f"{m} ({stats.markers[m]})" for m in missing[:10]], "unsealed_session": unsealed, "chain_ok": result.ok,
            "chain": result.reason}


def _markers(text: str) -> set[str]:
    import re

    return set(re.findall(r"\b[hp]\d+x\d+\b", text))


# -- orchestration -----------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--held", type=float, default=0.05, help="share of operations that need a review")
    parser.add_argument("--http-share", type=float, default=0.5)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the store and target databases")
    parser.add_argument("--python-upstream", action="store_true",
                        help="uvicorn as the HTTPS upstream instead of bench/https_load.c")
    args = parser.parse_args()
    args.tables = 100

    import psycopg
    from cryptography.fernet import Fernet

    from tests.integration.http.upstream import make_tls_files

    tag = secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix="airlock-load-"))
    up_ca, cert, key = make_tls_files(tmp)
    home = tmp / "home"
    store_db, target_db, role = f"airlock_load_store_{tag}", f"airlock_load_target_{tag}", f"airlock_load_{tag}"
    password = secrets.token_urlsafe(12)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if args.store == "postgres":
            conn.execute(f'CREATE DATABASE "{store_db}"')
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {target_db} OWNER {role}")
    with psycopg.connect(f"{PG_ADMIN} dbname={target_db}", autocommit=True) as conn:
        conn.execute(f"SET ROLE {role}")
        for i in range(args.tables):
            conn.execute(f"CREATE TABLE ledger_{i} (marker text)")
    url = (f"postgresql+psycopg://postgres@127.0.0.1:5432/{store_db}" if args.store == "postgres"
           else f"sqlite:///{home / 'airlock.db'}")
    env = {**os.environ, "AIRLOCK_HOME": str(home), "AIRLOCK_DATABASE_URL": url, "PYTHONPATH": str(ROOT),
           "AIRLOCK_SECRET_KEY": Fernet.generate_key().decode(), "LOAD_PG_PASSWORD": password}
    os.environ.update(env)
    from sqlalchemy import select

    from app.config import settings
    from app.db import reset_engines, session_scope
    from app.identity import issue_token
    from app.inventory import apply_policy
    from app.migrate import upgrade
    from app.models import User
    from app.policy import load_policy
    from app.portal.security import new_api_token

    settings.cache_clear()
    upgrade(url)
    args.upstream_port, args.proxy_port, portal_port = free_port(), free_port(), free_port()
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY.format(db=target_db, role=role, port=args.upstream_port, ca=up_ca)),
                     actor="bench", environ=env)
        args.token = issue_token(s, "load", timedelta(hours=2)).token
        api_token, digest = new_api_token()
        s.scalars(select(User)).one().api_token_hash = digest
    reset_engines()
    args.auth = base64.b64encode(f"load:{args.token}".encode()).decode()
    args.ca = str(home / "ca" / "airlock-ca.pem")

    procs: list[subprocess.Popen] = []
    stats, counts, server = Stats(), {"approved": 0, "vote_refused": 0, "errors": 0}, {}
    stop = threading.Event()
    try:
        upstream = start_upstream(args.upstream_port, cert, key, env,
                                  None if args.python_upstream else build_https_load(tmp))
        procs.append(upstream)
        proxy = subprocess.Popen([sys.executable, "-m", "app.cli", "proxy"], env={
            **env, "AIRLOCK_PROXY_PORT": str(args.proxy_port)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proxy)
        wait_port(args.proxy_port, proxy, "proxy")
        relay = subprocess.Popen([sys.executable, "-m", "app.cli", "relay"], env={**env, "AIRLOCK_POSTGRES_PORT": "0", "AIRLOCK_SSH_PORT": "0", "AIRLOCK_MYSQL_PORT": "0"},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(relay)
        for line in relay.stderr:
            if "postgres relay listening on" in line:
                args.relay_port = int(line.rsplit(":", 1)[1])
                break
        threading.Thread(target=lambda: [None for _ in relay.stderr], daemon=True).start()
        portal = subprocess.Popen([sys.executable, "-m", "app.cli", "portal"],
                                  env={**env, "AIRLOCK_PORTAL_PORT": str(portal_port)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(portal)
        wait_port(portal_port, portal, "portal")
        time.sleep(2)  # every worker up
        threading.Thread(target=approver, args=(portal_port, api_token, stop, counts), daemon=True).start()
        threading.Thread(target=watch_server, args=(stop, server), daemon=True).start()
        began = time.perf_counter()
        asyncio.run(run_load(args, stats))
        elapsed = time.perf_counter() - began
    finally:
        stop.set()
        for proc in reversed(procs):  # politely: the relay and proxy flush their recordings
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    evidence = check_evidence(stats)
    ops = len(stats.allowed) + len(stats.held)
    report = {
        "connections": args.connections, "seconds": args.seconds, "elapsed": round(elapsed, 1), "store": args.store,
        "cpus": os.cpu_count(), "operations_ok": ops, "ops_per_second": round(ops / elapsed, 1),
        "allowed_p50_ms": round(pct(stats.allowed, 0.50), 2), "allowed_p99_ms": round(pct(stats.allowed, 0.99), 2),
        "held_ok": len(stats.held), "held_share": round(len(stats.held) / max(ops, 1), 3),
        "held_p50_ms": round(pct(stats.held, 0.50), 1), "held_p99_ms": round(pct(stats.held, 0.99), 1),
        "refused": sum(1 for v in stats.markers.values() if v == "refused"),
        "refused_unavailable": sum(1 for v in stats.markers.values() if v == "unavailable"),
        "pg_server": server, "runtime_errors": len(stats.errors), "error_examples": stats.errors[:5], "approver": counts, **evidence,
    }
    reset_engines()
    if args.keep:
        report["kept"] = {"store": url, "target": target_db}
    else:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {target_db} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            if args.store == "postgres":
                conn.execute(f'DROP DATABASE IF EXISTS "{store_db}" WITH (FORCE)')
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:>26}: {v}")
    good = (evidence["missing_from_recordings"] == 0 and evidence["chain_ok"] and not evidence["unsealed_session"]
            and not stats.errors)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
