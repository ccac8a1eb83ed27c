"""Policy evaluation throughput: a 200-rule policy, a mix of operations.

Run: .venv/bin/python bench/bench_policy.py [--seconds 1.0]

Rates are per CPU second of this process (time.process_time), so other load on a
shared machine does not skew them much.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.policy import Approvers, GrantSpec, Match, Rule, ServiceAccountSpec, TimeWindow, compile_policy, evaluate  # noqa: E402
from app.types import Operation, Principal  # noqa: E402

CONNECTIONS = {
    "http": [f"api-{i}" for i in range(6)],
    "postgres": [f"pg-{i}" for i in range(6)],
    "mysql": [f"my-{i}" for i in range(4)],
    "ssh": [f"host-{i}" for i in range(4)],
}
ACCOUNTS = [f"agent-{i}" for i in range(8)]


def build_rules(n: int = 200, seed: int = 7) -> list[Rule]:
    rnd = random.Random(seed)
    rules: list[Rule] = []
    for i in range(n):
        protocol = rnd.choice(list(CONNECTIONS))
        conn = rnd.choice([rnd.choice(CONNECTIONS[protocol]), CONNECTIONS[protocol][0][:-1] + "*", "*"])
        action = rnd.choices(["deny", "review", "allow", "mask"], [3, 3, 1, 2])[0]
        kw: dict = {"protocol": (protocol,), "connection": (conn,)}
        if protocol == "http":
            kw["method"] = (rnd.choice(["POST", "DELETE", "P*"]),)
            kw["path"] = (rnd.choice([f"/v{rnd.randint(1, 3)}/res{i}/*", f"regex:^/v\\d/res{i}/\\d+$"]),)
            if rnd.random() < 0.2:
                kw["body"] = (("$.amount", (f"{rnd.randint(1, 9)}*",)),)
        elif protocol == "ssh":
            kw["command"] = (rnd.choice([f"regex:\\bcmd{i}\\b", f"cmd{i} *"]),)
        else:
            kw["kind"] = (rnd.choice(["write", "ddl", "admin", "read"]),)
            if rnd.random() < 0.5:
                kw["tables"] = (rnd.choice([f"t{i}", f"secret_{i}*", f"regex:^audit_{i}"]),)
        if rnd.random() < 0.1:
            kw["groups"] = ("oncall",)
        if rnd.random() < 0.05:
            kw["time"] = TimeWindow(days=("sat", "sun"), tz="Europe/Paris")
        extra: dict = {}
        if action == "review":
            extra["approvers"] = Approvers(groups=("dba",), count=1)
        if action == "mask":
            extra.update(fields=("email",), detectors=("email",), strategy="partial")
        rules.append(Rule(name=f"r{i}", match=Match(**kw), action=action, **extra))
    return rules


def build_ops(rnd: random.Random) -> dict[str, list[Operation]]:
    ops: dict[str, list[Operation]] = {"http": [], "sql": [], "ssh": [], "no-grant": []}
    for _ in range(200):
        c = rnd.choice(CONNECTIONS["http"])
        m = rnd.choice(["GET", "POST", "DELETE", "PUT"])
        ops["http"].append(Operation("http", c, "write" if m != "GET" else "read", method=m, host=f"{c}.example.com",
                                     path=f"/v{rnd.randint(1, 3)}/res{rnd.randint(0, 250)}/{rnd.randint(1, 999)}",
                                     body={"amount": rnd.randint(1, 99999)}))
        p = rnd.choice(["postgres", "mysql"])
        ops["sql"].append(Operation(p, rnd.choice(CONNECTIONS[p]), rnd.choice(["read", "write", "ddl"]),
                                    targets=(f"public.t{rnd.randint(0, 250)}",)))
        ops["ssh"].append(Operation("ssh", rnd.choice(CONNECTIONS["ssh"]), "exec",
                                    command=f"cmd{rnd.randint(0, 250)} --flag"))
        ops["no-grant"].append(Operation("http", "unknown", "read", method="GET", path="/"))
    return ops


def measure(policy, ops: list[Operation], principals: list[Principal], seconds: float, now) -> float:
    n, i, start = 0, 0, time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            evaluate(policy, ops[i % len(ops)], principals[i % len(principals)], now)
            i += 1
        n += 1000
        if time.process_time() >= deadline:
            return n / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    rnd = random.Random(1)
    rules = build_rules()
    grants = [GrantSpec(sa, c) for sa in ACCOUNTS for cs in CONNECTIONS.values() for c in cs]
    sas = [ServiceAccountSpec(sa, groups=("oncall",) if i % 3 == 0 else ()) for i, sa in enumerate(ACCOUNTS)]
    policy = compile_policy(rules, grants, sas, version=1)
    principals = [Principal(sa, groups=frozenset({"team"})) for sa in ACCOUNTS]
    ops = build_ops(rnd)
    ops["mix"] = [op for group in ("http", "sql", "ssh") for op in ops[group]]
    rnd.shuffle(ops["mix"])
    now = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    print(f"{len(rules)} rules, {len(grants)} grants\n")
    print(f"{'operations':<12} {'evaluations/s':>15}")
    print("-" * 28)
    for name in ("http", "sql", "ssh", "no-grant", "mix"):
        rate = measure(policy, ops[name], principals, args.seconds, now)
        print(f"{name:<12} {rate:>15,.0f}")
    # Worst case: every evaluation misses the plan cache (e.g. right after a policy change).
    cold = compile_policy(rules, grants, sas, version=2)
    n, start = 0, time.process_time()
    while time.process_time() - start < args.seconds:
        cold._plans.clear()
        evaluate(cold, ops["mix"][n % len(ops["mix"])], principals[n % len(principals)], now)
        n += 1
    print(f"{'mix, cold':<12} {n / (time.process_time() - start):>15,.0f}")


if __name__ == "__main__":
    main()
