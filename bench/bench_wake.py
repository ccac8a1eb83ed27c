"""Decision-to-wake latency of `approvals.wait_for_decision`, SQLite and PostgreSQL.

A separate decider process (as a portal would be) approves one review at a time and
reports the wall time just after its commit; the waiter, on uvloop in this process,
notes the wall time at which `wait_for_decision` returned. Latency is the difference.
Waiters use a 30 s safety re-read, so every sample measures the bus itself.

    .venv/bin/python bench/bench_wake.py [--samples 30] [--json]

Targets: p95 <= 100 ms on PostgreSQL, <= 500 ms on SQLite (default 0.05 s polling).
PostgreSQL: a throwaway database on $AIRLOCK_BENCH_PG (default
postgresql+psycopg://postgres@127.0.0.1:5432), created, migrated and dropped.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import approvals, db  # noqa: E402
from app.bus import get_bus  # noqa: E402
from app.config import settings  # noqa: E402
from app.db import session_scope  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import Group, User  # noqa: E402
from app.types import Operation, Principal, ReviewSpec, Verdict  # noqa: E402

TARGETS_MS = {"sqlite": 500.0, "postgresql": 100.0}
DECIDER = """
import sys, time
from app import approvals
from app.db import session_scope
for line in sys.stdin:
    with session_scope() as s:
        approvals.vote(s, int(line), voter_email="alice@example.com", decision="approve")
    print(time.time(), flush=True)
"""


def _use(url: str, home: Path) -> None:
    os.environ["AIRLOCK_HOME"] = str(home)
    os.environ["AIRLOCK_DATABASE_URL"] = url
    settings.cache_clear()
    db.reset_engines()


def _seed(n: int) -> list[int]:
    verdict = Verdict(action="review", rule="bench", review=ReviewSpec(groups=("dba",), count=1))
    with session_scope() as s:
        s.add(User(email="alice@example.com", groups=[Group(name="dba")]))
    ids = []
    with session_scope() as s:
        for i in range(n):
            op = Operation(protocol="postgres", connection="bench", kind="write", text=f"DELETE FROM t{i}",
                           fingerprint=f"fp-{i}")
            ids.append(approvals.create_review(s, principal=Principal(service_account="agent"), operation=op,
                                               verdict=verdict).id)
    return ids


async def _measure(ids: list[int]) -> list[float]:
    decider = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DECIDER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )

    async def waiter(rid: int) -> tuple[str, float]:
        status = await approvals.wait_for_decision(rid, 10, safety_interval=30)
        return status, time.time()

    samples = []
    try:
        for rid in ids:
            task = asyncio.create_task(waiter(rid))
            await asyncio.sleep(0)
            await get_bus().ready(5)
            # Land decisions at random points of the SQLite poll cycle, not in step with it.
            await asyncio.sleep(random.uniform(0.02, 0.1))
            decider.stdin.write(f"{rid}\n".encode())
            await decider.stdin.drain()
            committed = float(await asyncio.wait_for(decider.stdout.readline(), 30))
            status, woke = await task
            if status != "approved":
                raise RuntimeError(f"review {rid} ended {status}")
            samples.append((woke - committed) * 1000)
    finally:
        decider.stdin.close()
        await decider.wait()
    return samples[1:]  # the first sample pays for the decider's and the listener's warm-up


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"n": len(ordered), "p50_ms": statistics.median(ordered), "p95_ms": p95, "max_ms": ordered[-1]}


def _run(url: str, home: Path, n: int) -> dict[str, float]:
    _use(url, home)
    if url.startswith("sqlite"):
        upgrade(url)
        db.reset_engines()
    ids = _seed(n + 1)
    return _summary(uvloop.run(_measure(ids)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        home = Path(tmp)
        results["sqlite"] = _run(f"sqlite:///{home / 'airlock.db'}", home, args.samples)
        base = os.environ.get("AIRLOCK_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432").rstrip("/")
        admin = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        name = f"airlock_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"{base}/{name}"
            upgrade(url)
            db.reset_engines()
            results["postgresql"] = _run(url, home, args.samples)
        finally:
            db.reset_engines()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    ok = all(r["p95_ms"] <= TARGETS_MS[k] for k, r in results.items())
    if args.json:
        print(json.dumps({"bench": "wake", "results": results, "targets_p95_ms": TARGETS_MS, "ok": ok}))
    else:
        print(f"{'store':<12}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'target p95':>12}")
        for k, r in results.items():
            print(f"{k:<12}{r['n']:>4}{r['p50_ms']:>10.1f}{r['p95_ms']:>10.1f}{r['max_ms']:>10.1f}"
                  f"{TARGETS_MS[k]:>12.0f}")
        print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
