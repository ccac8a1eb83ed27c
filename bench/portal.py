"""Portal page times with 10,000 recorded sessions and 100,000 audit entries.

    .venv/bin/python bench/portal.py [--sessions 10000] [--audit 100000] [--runs 40]
                                     [--database-url postgresql+psycopg://...]

Seeds a fresh store (a temporary SQLite file unless --database-url names an empty,
migrated-or-new database), serves the portal with waitress on a free loopback port,
signs in like a browser, and reports p50/p95 per page over --runs requests each
(target: p95 <= 200 ms). Prints a JSON summary last.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_MS = 200.0


def _setup_env(database_url: str | None) -> str:
    from cryptography.fernet import Fernet

    home = tempfile.mkdtemp(prefix="airlock-bench-")
    os.environ["AIRLOCK_HOME"] = home
    os.environ.setdefault("AIRLOCK_SECRET_KEY", Fernet.generate_key().decode())
    if database_url:
        os.environ["AIRLOCK_DATABASE_URL"] = database_url
    from app.config import settings

    settings.cache_clear()
    from app.migrate import upgrade

    upgrade(settings().database_url)
    return settings().database_url


def seed(n_sessions: int, n_audit: int) -> None:
    from tests.integration.portal.held import decide, http_op, sql_op
    from tests.integration.portal.scenario import counts, seed_audit, seed_bulk_sessions, seed_scenario

    t0 = time.perf_counter()
    seed_scenario()
    for i in range(5):
        decide(sql_op(f"UPDATE invoices SET status = 'void' WHERE id = {i}"), hold=0, run_id="run-7f3a")
    decide(http_op("POST", "/v1/refunds"), hold=0)
    seed_bulk_sessions(n_sessions)
    seed_audit(n_audit)
    _busy_review()
    sessions, entries = counts()
    print(f"seeded {sessions} sessions and {entries} audit entries in {time.perf_counter() - t0:.1f}s", flush=True)


def _busy_review() -> None:
    """A review by the busiest bulk account, in a run with many steps: the worst case for
    the review page's history and run context."""
    from app import approvals
    from app.db import session_scope
    from app.types import Principal, ReviewSpec, Verdict
    from tests.integration.portal.held import sql_op

    with session_scope() as s:
        for i in range(20):
            approvals.create_review(
                s, principal=Principal(service_account="etl-nightly"),
                operation=sql_op(f"DELETE FROM t7 WHERE id = {i}", connection="orders-db"),
                verdict=Verdict(action="review", rule="bench", review=ReviewSpec(groups=("dba",))), run_id="run-700")


def _review_ids() -> tuple[int, int, int]:
    from sqlalchemy import func, select

    from app.db import session_scope
    from app.models import Review

    with session_scope() as s:
        sql = s.scalar(select(func.max(Review.id)).where(Review.connection == "billing-db"))
        http = s.scalar(select(func.max(Review.id)).where(Review.protocol == "http"))
        busy = s.scalar(select(func.max(Review.id)).where(Review.service_account == "etl-nightly"))
    return sql, http, busy


def serve():
    from waitress.server import create_server

    from app.portal import create_app

    server = create_server(create_app(), host="127.0.0.1", port=0, threads=4, ident="airlock-bench")
    threading.Thread(target=server.run, daemon=True).start()
    return server, f"http://127.0.0.1:{server.effective_port}"


def login(base: str):
    import requests

    from tests.integration.portal.scenario import PASSWORD

    s = requests.Session()
    page = s.get(base + "/login").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"', page)
    csrf = token.group(1) or token.group(2)
    resp = s.post(base + "/login", data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": csrf},
                  allow_redirects=False)
    assert resp.status_code == 302, resp.text[:300]
    return s


def pages(session, base: str) -> dict[str, str]:
    first = session.get(base + "/sessions").text
    cursor = re.search(r'href="([^"]*cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
    audit = session.get(base + "/audit").text
    before = re.search(r'href="([^"]*before=\d+)"', audit).group(1).replace("&amp;", "&")
    sql_id, http_id, busy_id = _review_ids()
    return {
        "dashboard": "/",
        "sessions": "/sessions",
        "sessions page 2": cursor,
        "sessions by service account": "/sessions?service_account=etl-nightly",
        "sessions by protocol+connection": "/sessions?protocol=postgres&connection=orders-db",
        "sessions denied": "/sessions?verdict=denied",
        "sessions with errors (none: worst case)": "/sessions?verdict=error",
        "sessions by run": "/sessions?run_id=run-700",
        "audit": "/audit",
        "audit page 2": before,
        "audit by action": "/audit?action=decision.deny",
        "audit by actor": "/audit?actor=support-bot",
        "audit text search": "/audit?q=DELETE+FROM+t7",
        "review queue": "/reviews",
        "review queue, all pending": "/reviews?view=all",
        "review page (SQL, run and history)": f"/reviews/{sql_id}",
        "review page (HTTP)": f"/reviews/{http_id}",
        "review page (busiest account, with history)": f"/reviews/{busy_id}",
        "review page poll (changed)": f"/reviews/{busy_id}/updates?state=x",
        "queue poll (changed)": "/reviews/updates?state=x",
        "badge poll (changed)": "/reviews/badge?state=x",
        "api review": f"/api/v1/reviews/{busy_id}",
        "api sessions": "/api/v1/sessions",
    }


def measure(session, base: str, path: str, runs: int, headers=None) -> dict[str, float]:
    session.get(base + path, headers=headers)  # warm caches, like a page people keep open
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        resp = session.get(base + path, headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"{path}: HTTP {resp.status_code}")
    times.sort()
    p95 = times[max(0, int(round(0.95 * len(times))) - 1)]
    return {"p50": statistics.median(times), "p95": p95, "max": times[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--audit", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--postgres", action="store_true",
                    help="use a throwaway database on the local PostgreSQL (127.0.0.1:5432, user postgres)")
    args = ap.parse_args()

    dropper = None
    if args.postgres:
        args.database_url, dropper = _throwaway_pg()
    try:
        return _run(args)
    finally:
        if dropper:
            dropper()


def _throwaway_pg():
    import uuid

    import psycopg

    dsn = os.environ.get("AIRLOCK_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    name = f"airlock_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from app.db import reset_engines

        reset_engines()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


def _run(args) -> int:
    url = _setup_env(args.database_url)
    print(f"store: {url.split('@')[-1]}", flush=True)
    seed(args.sessions, args.audit)
    server, base = serve()
    try:
        session = login(base)
        from app.db import session_scope
        from app.models import User
        from app.portal.security import new_api_token
        from sqlalchemy import select

        with session_scope() as s:
            admin = s.scalars(select(User).where(User.email == "admin@example.com")).one()
            token, admin.api_token_hash = new_api_token()
        results = {}
        for name, path in pages(session, base).items():
            headers = {"Authorization": f"Bearer {token}"} if path.startswith("/api/") else None
            results[name] = measure(session, base, path, args.runs, headers)
            r = results[name]
            flag = "ok" if r["p95"] <= TARGET_MS else "SLOW"
            print(f"{name:40s} p50 {r['p50']:7.1f} ms   p95 {r['p95']:7.1f} ms   max {r['max']:7.1f} ms   {flag}",
                  flush=True)
        session.close()  # close the keep-alive connection before the server goes
    finally:
        server.close()
    worst = max(r["p95"] for r in results.values())
    print(json.dumps({"sessions": args.sessions, "audit_entries": args.audit, "runs": args.runs,
                      "p95_ms": {k: round(v["p95"], 1) for k, v in results.items()},
                      "worst_p95_ms": round(worst, 1), "target_ms": TARGET_MS}))
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
