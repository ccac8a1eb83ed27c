"""Starting an access-review campaign over 10,000 grants with 1,000,000 recorded operations.

    .venv/bin/python bench/campaigns.py [--grants 10000] [--ops 1000000] [--store sqlite|pg|both]

Builds a fresh migrated store (a temporary SQLite file; a throwaway PostgreSQL database
on 127.0.0.1:5432), 1,000 service accounts x 10 connections = 10,000 grants, and
100,000 sessions of 10 statements each inside the 90-day window (a mix of reads,
writes and denials, as the relay records them), plus 200,000 events from before it.
Then summarises the ended sessions as the scheduler's usage job does every minute
(timed apart: in a running system this happens as sessions end), and times
`start_run` (usage + suggestions + 10,000 items, one transaction). Prints the plan of
the window scan, to show it uses the indexes. Target: < 10 s.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
STATEMENTS = [("select * from orders where id = $1", "SELECT")] * 7 + [
    ("insert into audit_log values ($1)", "INSERT"), ("begin", "BEGIN")]
DENIAL = json.dumps({"action": "deny", "status": "denied", "rule": "no-ddl", "kind": "ddl",
                     "operation": "drop table orders"})


def build(url: str, grants: int, ops: int) -> datetime:
    from sqlalchemy import insert

    from app import db
    from app.migrate import upgrade
    from app.models import Campaign, Connection, Grant, RecordedSession, ServiceAccount, SessionEvent

    upgrade(url)
    db.reset_engines()
    os.environ["AIRLOCK_DATABASE_URL"] = url
    from app.config import settings

    settings.cache_clear()
    eng = db.engine_for(url)
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    rnd = random.Random(7)
    n_conn = 10
    n_sa = grants // n_conn
    with eng.begin() as c:
        c.execute(insert(Connection), [{"name": f"db-{i}", "type": "postgres", "config": {}, "owner": f"owner{i}@example.com",
                                         "created_at": now, "updated_at": now} for i in range(n_conn)])
        c.execute(insert(ServiceAccount), [{"name": f"sa-{i}", "description": "", "public_keys": [], "disabled": False,
                                            "created_at": now} for i in range(n_sa)])
        c.execute(insert(Grant), [{"service_account_id": a + 1, "connection_id": k + 1, "source": "policy",
                                   "created_by": "bench", "created_at": now - timedelta(days=365)}
                                  for a in range(n_sa) for k in range(n_conn)])
        c.execute(insert(Campaign), [{"name": "everything", "scope": {}, "reviewers": "owner", "schedule": "0 9 1 * *",
                                      "duration_seconds": 14 * 86400, "on_deadline": "revoke",
                                      "unused_after_seconds": 30 * 86400, "enabled": True, "created_at": now}])
    per_session = 10
    in_window = ops // per_session
    old = in_window // 5  # sessions from before the window: read by nobody
    batch_s, batch_e = [], []

    def flush(c):
        if batch_s:
            c.execute(insert(RecordedSession), batch_s)
            c.execute(insert(SessionEvent), batch_e)
            batch_s.clear()
            batch_e.clear()

    with eng.begin() as c:
        for n in range(in_window + old):
            days = rnd.uniform(0, 89.9) if n < in_window else rnd.uniform(100, 300)
            # Three grants in ten are never used: their suggestions say revoke.
            a, k = rnd.randrange(n_sa), rnd.randrange(7)
            sid = str(uuid.uuid4())
            started = now - timedelta(days=days)
            batch_s.append({"id": sid, "protocol": "postgres", "connection": f"db-{k}", "service_account": f"sa-{a}",
                            "client_addr": "", "started_at": started, "ended_at": started + timedelta(seconds=11),
                            "event_count": per_session, "meta": {}})
            for seq in range(1, per_session + 1):
                if seq == per_session and n % 10 == 0:
                    data, kind = DENIAL, "decision"
                else:
                    sql, tag = STATEMENTS[rnd.randrange(len(STATEMENTS))]
                    data, kind = json.dumps({"sql": sql, "ms": 0.2, "tag": tag}, separators=(",", ":")), "output"
                batch_e.append({"session_id": sid, "seq": seq, "t": float(seq), "kind": kind, "data": data})
            if len(batch_s) >= 2000:
                flush(c)
        flush(c)
    if url.startswith("postgresql"):
        with eng.begin() as c:
            from sqlalchemy import text

            c.execute(text("ANALYZE"))
    return now


def plan(url: str, now: datetime) -> list[str]:
    from sqlalchemy import text

    from app import db

    start = now - timedelta(days=90)
    sql = ("SELECT s.id, s.protocol, s.started_at, s.ended_at, s.service_account, s.connection, u.ops, u.denials "
           "FROM sessions s LEFT JOIN session_usage u ON u.session_id = s.id "
           "WHERE s.started_at >= :a AND s.started_at <= :b")
    prefix = "EXPLAIN QUERY PLAN " if url.startswith("sqlite") else "EXPLAIN "
    with db.engine_for(url).connect() as c:
        return [" ".join(str(x) for x in row) for row in c.execute(text(prefix + sql), {"a": start, "b": now})]


def measure(url: str, grants: int, ops: int) -> dict:
    t0 = time.perf_counter()
    now = build(url, grants, ops)
    built = time.perf_counter() - t0
    from app.campaigns.jobs import usage_tick
    from app.campaigns.runs import start_by_name
    from app.db import session_scope

    # What `airlock scheduler` does every minute as sessions end: one summary row per session.
    t0 = time.perf_counter()
    summarized = 0
    while True:
        n = usage_tick(now=now)
        summarized += n
        if n == 0:
            break
    summarize = time.perf_counter() - t0
    t1 = time.perf_counter()
    with session_scope() as s:
        run_id = start_by_name(s, "everything", actor="bench", now=now).id
    took = time.perf_counter() - t1  # committed: what `airlock campaign start` waits for
    from sqlalchemy import func, select

    from app.models import CampaignItem

    with session_scope() as s:
        counts = s.execute(select(CampaignItem.suggestion, func.count()).where(CampaignItem.run_id == run_id)
                           .group_by(CampaignItem.suggestion)).all()
    suggestions = {k: n for k, n in counts}
    items = sum(suggestions.values())
    return {"store": url.split(":")[0], "grants": grants, "ops": ops, "items": items, "build_s": round(built, 1),
            "summarized_sessions": summarized, "summarize_s": round(summarize, 1),
            "start_s": round(took, 2), "suggestions": suggestions, "plan": plan(url, now)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grants", type=int, default=10_000)
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--store", choices=["sqlite", "pg", "both"], default="both")
    args = ap.parse_args()
    from cryptography.fernet import Fernet

    os.environ.setdefault("AIRLOCK_SECRET_KEY", Fernet.generate_key().decode())
    tmp = tempfile.mkdtemp(prefix="airlock-bench-")
    os.environ["AIRLOCK_HOME"] = tmp
    results = []
    if args.store in ("sqlite", "both"):
        results.append(measure(f"sqlite:///{tmp}/bench.db", args.grants, args.ops))
    if args.store in ("pg", "both"):
        import psycopg

        name = f"airlock_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        try:
            results.append(measure(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", args.grants, args.ops))
        finally:
            from app import db

            db.reset_engines()
            with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "plan"}))
        for line in r["plan"]:
            print("   plan:", line)


if __name__ == "__main__":
    main()
