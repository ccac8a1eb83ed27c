"""The MySQL relay against MariaDB direct (issue 21's bench).

    PYTHONPATH=. python bench/mysql_relay.py [SECONDS] [--rounds N]

1. point selects: one PyMySQL connection, `SELECT v FROM bench_kv WHERE id = %s` in a loop;
2. mixed load, mysqlslap-style: 8 clients, two point/range reads to one update;
3. with --prepared: point selects as a server-side prepared statement (mysql-connector's
   prepared cursor: COM_STMT_PREPARE once, then COM_STMT_RESET + COM_STMT_EXECUTE per
   select), direct and through the relay.
Each runs direct to 127.0.0.1:3306, through a bare pipe (uvloop, plaintext, no work: the
cost of the extra hop alone on this machine) and through the relay (TLS on the client
leg, the token as a clear-text password, a 10-rule policy). The target leg is
plaintext: the local MariaDB has TLS disabled. The three run one after the other in
each round, so that the machine's load falls on all of them; the summary is the median
of the rounds' ratios. It makes a throwaway store, database and user, and removes the
database and user afterwards.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parents[1]
POLICY = """
version: 1
service_accounts: [{{name: bench, groups: [bots]}}]
users: [{{email: dba@example.com, groups: [dba]}}]
connections:
  - {{name: bench, type: mysql, address: "127.0.0.1:3306", database: {db}, username: {user},
     password: "${{env:BENCH_PW}}"}}
grants: [{{service_account: bench, connection: bench}}]
rules:
  - {{name: no-ddl, match: {{protocol: mysql, kind: [ddl, dcl, admin]}}, action: deny}}
  - {{name: audit-append-only, match: {{protocol: mysql, kind: write, tables: [audit_*]}}, action: deny}}
  - {{name: no-secrets, match: {{protocol: mysql, tables: [secrets, vault_*]}}, action: deny}}
  - {{name: payroll-review, match: {{protocol: mysql, kind: write, tables: [payroll]}}, action: review,
     approvers: {{groups: [dba]}}}}
  - {{name: mask-users, match: {{protocol: mysql, tables: [users]}}, action: mask, fields: [email]}}
  - {{name: mask-cards, match: {{protocol: mysql, tables: [payments]}}, action: mask, detectors: [credit_card]}}
  - {{name: reads-ok, match: {{protocol: mysql, kind: read}}, action: allow}}
  - {{name: tcl-ok, match: {{protocol: mysql, kind: tcl}}, action: allow}}
  - {{name: writes-ok, match: {{protocol: mysql, kind: write}}, action: allow}}
  - {{name: http-no-admin, match: {{protocol: http, path: "/admin*"}}, action: deny}}
"""


# Two reads to one write on the bench table.
MIXED = ("SELECT v FROM bench_kv WHERE id = %s", "SELECT COUNT(*) FROM bench_kv WHERE id < %s",
         "UPDATE bench_kv SET v = CONCAT('slap ', id) WHERE id = %s")


def admin():
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its children (the relay's recording writer):
    what a statement costs the relay, whatever the machine's load does to the rates."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return total + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SLICE = 0.25  # seconds: the paths take turns this often, so a change of load hits them all


def point_selects(seconds: float, paths: dict[str, dict], counted: list[int] | None = None) -> dict[str, float]:
    """Statements per second on one connection per path, `seconds` each, in turns
    (`counted` gets each path's number of statements)."""
    conns = {name: pymysql.connect(autocommit=True, **conn) for name, conn in paths.items()}
    counts, spent = dict.fromkeys(paths, 0), dict.fromkeys(paths, 0.0)
    n, turn, end = 0, 0, time.perf_counter() + seconds * len(paths)
    while time.perf_counter() < end:
        name = list(paths)[turn % len(paths)]
        cur = conns[name].cursor()
        t0 = now = time.perf_counter()
        while now - t0 < SLICE:
            cur.execute("SELECT v FROM bench_kv WHERE id = %s", (n % 1000 + 1,))
            cur.fetchall()
            n += 1
            counts[name] += 1
            now = time.perf_counter()
        spent[name] += now - t0
        turn += 1
    for c in conns.values():
        c.close()
    if counted is not None:
        counted[:] = counts.values()
    return {name: counts[name] / spent[name] for name in paths}


def prepared_selects(seconds: float, paths: dict[str, dict]) -> dict[str, float]:
    """Statements per second on one connection per path with one prepared statement,
    `seconds` each, in turns (mysql-connector; its C extension when it has one)."""
    import mysql.connector

    def connect(conn: dict) -> object:
        kw = dict(host=conn["host"], port=conn["port"], user=conn["user"], password=conn["password"],
                  database=conn["database"], autocommit=True, charset="utf8mb4", collation="utf8mb4_general_ci")
        if "ssl" in conn:
            kw.update(ssl_verify_cert=False, auth_plugin="mysql_clear_password")
        return mysql.connector.connect(**kw)

    conns = {name: connect(conn) for name, conn in paths.items()}
    curs = {name: c.cursor(prepared=True) for name, c in conns.items()}
    counts, spent = dict.fromkeys(paths, 0), dict.fromkeys(paths, 0.0)
    n, turn, end = 0, 0, time.perf_counter() + seconds * len(paths)
    while time.perf_counter() < end:
        name = list(paths)[turn % len(paths)]
        cur = curs[name]
        t0 = now = time.perf_counter()
        while now - t0 < SLICE:
            cur.execute("SELECT v FROM bench_kv WHERE id = %s", (n % 1000 + 1,))
            cur.fetchall()
            n += 1
            counts[name] += 1
            now = time.perf_counter()
        spent[name] += now - t0
        turn += 1
    for c in conns.values():
        c.close()
    return {name: counts[name] / spent[name] for name in paths}


def mixed(seconds: float, paths: dict[str, dict], clients: int = 8) -> dict[str, float]:
    """mysqlslap's way (N clients, a fixed mix of statements, total queries per second),
    in PyMySQL: mysqlslap itself logs in without a default database, which the relay
    refuses (the database names the connection). Every client has a connection on each
    path and all switch paths together, by the clock."""
    names = list(paths)
    counts = [dict.fromkeys(names, 0) for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    t0: list[float] = []

    def client(i: int) -> None:
        curs = {name: pymysql.connect(autocommit=True, **conn).cursor() for name, conn in paths.items()}
        start.wait()
        n = 0
        while (now := time.perf_counter()) < t0[0] + seconds * len(names):
            name = names[int((now - t0[0]) / SLICE) % len(names)]
            for sql in MIXED:
                curs[name].execute(sql, ((n * 7 + i) % 1000 + 1,))
                curs[name].fetchall()
            counts[i][name] += len(MIXED)
            n += 1
        for cur in curs.values():
            cur.connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    t0.append(time.perf_counter())
    start.wait()
    for t in threads:
        t.join()
    return {name: sum(c[name] for c in counts) / seconds for name in names}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _piped(client_r, client_w) -> None:
    target_r, target_w = await asyncio.open_connection("127.0.0.1", 3306)
    await asyncio.gather(_pipe(client_r, target_w), _pipe(target_r, client_w), return_exceptions=True)


async def _serve_pipe() -> None:
    server = await asyncio.start_server(_piped, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def start_pipe() -> tuple[subprocess.Popen, int]:
    """The bare pipe in a process of its own, as the relay is."""
    proc = subprocess.Popen([sys.executable, __file__, "--pipe"], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("seconds", type=float, nargs="?", default=10)
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--prepared", action="store_true", help="also prepared point selects (mysql-connector)")
    args.add_argument("--pipe", action="store_true", help=argparse.SUPPRESS)
    opts = args.parse_args()
    if opts.pipe:
        import uvloop
        uvloop.run(_serve_pipe())
        return
    seconds = opts.seconds
    tag = secrets.token_hex(3)
    db, user, pw = f"bench_my_{tag}", f"bench_my_{tag}", secrets.token_urlsafe(12)
    with admin() as a, a.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}'")
        cur.execute(f"GRANT ALL ON {db}.* TO '{user}'@'%'")
        cur.execute(f"USE {db}")
        cur.execute("CREATE TABLE bench_kv (id int PRIMARY KEY, v varchar(40))")
        cur.execute("INSERT INTO bench_kv SELECT seq, CONCAT('value ', seq) FROM seq_1_to_1000")
    home = tempfile.mkdtemp(prefix="airlock-bench-my-")
    env = {**os.environ, "AIRLOCK_HOME": home, "AIRLOCK_DATABASE_URL": f"sqlite:///{home}/airlock.db",
           "AIRLOCK_SECRET_KEY": __import__("cryptography.fernet").fernet.Fernet.generate_key().decode(),
           "BENCH_PW": pw, "AIRLOCK_MYSQL_PORT": "0", "AIRLOCK_SSH_PORT": "0",
           "AIRLOCK_POSTGRES_PORT": "0", "AIRLOCK_RELAY_WORKERS": "1", "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    from app.db import session_scope
    from app.identity import issue_token
    from app.inventory import apply_policy
    from app.migrate import upgrade
    from app.policy import load_policy

    upgrade(env["AIRLOCK_DATABASE_URL"])
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY.format(db=db, user=user)), actor="bench", environ=env)
        token = issue_token(s, "bench", timedelta(hours=1)).token
    pipe, pipe_port = start_pipe()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "relay"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    port = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            m = re.search(r"mysql relay listening on \S+:(\d+)", line)
            if m:
                port.append(int(m.group(1)))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the relay did not start")
        time.sleep(1)
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        direct = dict(host="127.0.0.1", port=3306, user=user, password=pw, database=db)
        relayed = dict(host="127.0.0.1", port=port[0], user="bench", password=token, database="bench", ssl=tls)
        piped = {**direct, "port": pipe_port}
        point_selects(0.5, {"relay": relayed})  # warm up (policy snapshot, caches)
        ratios: dict[str, list[float]] = {"point pipe": [], "point relay": [], "mixed pipe": [], "mixed relay": []}
        if opts.prepared:
            ratios["prepared relay"] = []
        paths = {"direct": direct, "pipe": piped, "relay": relayed}
        for n in range(1, opts.rounds + 1):
            counted: list[int] = []
            cpu = cpu_seconds(proc.pid), cpu_seconds(pipe.pid)
            pt = point_selects(seconds, paths, counted)
            relay_us = (cpu_seconds(proc.pid) - cpu[0]) / counted[2] * 1e6
            pipe_us = (cpu_seconds(pipe.pid) - cpu[1]) / counted[1] * 1e6
            d, p, r = pt["direct"], pt["pipe"], pt["relay"]
            print(f"round {n}: point selects, 1 connection: direct {d:.0f}/s, bare pipe {p:.0f}/s ({p / d:.2f}), "
                  f"relay {r:.0f}/s ({r / d:.2f}); CPU per statement: relay {relay_us:.0f} us, bare pipe "
                  f"{pipe_us:.0f} us", flush=True)
            mx = mixed(seconds, paths)
            md, mp, mr = mx["direct"], mx["pipe"], mx["relay"]
            print(f"round {n}: mixed load (2 reads : 1 update), 8 clients: direct {md:.0f} q/s, bare pipe {mp:.0f} q/s "
                  f"({mp / md:.2f}), relay {mr:.0f} q/s ({mr / md:.2f})", flush=True)
            for key, value in (("point pipe", p / d), ("point relay", r / d), ("mixed pipe", mp / md),
                               ("mixed relay", mr / md)):
                ratios[key].append(value)
            if opts.prepared:
                pr = prepared_selects(seconds, {"direct": direct, "relay": relayed})
                ratios["prepared relay"].append(pr["relay"] / pr["direct"])
                print(f"round {n}: prepared point selects, 1 connection: direct {pr['direct']:.0f}/s, relay "
                      f"{pr['relay']:.0f}/s ({pr['relay'] / pr['direct']:.2f})", flush=True)
            print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        print("median ratios to direct: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in ratios.items()))
    finally:
        proc.terminate()
        proc.wait(15)
        pipe.terminate()
        pipe.wait(15)
        with admin() as a, a.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


if __name__ == "__main__":
    main()
