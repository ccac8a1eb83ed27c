"""The MySQL relay against MariaDB direct (issue 21's bench).

    PYTHONPATH=. python bench/mysql_relay.py [SECONDS]

1. point selects: one PyMySQL connection, `SELECT v FROM bench_kv WHERE id = %s` in a loop;
2. mixed load, mysqlslap-style: 8 clients, two point/range reads to one update.
Each runs direct to 127.0.0.1:3306 and through the relay (TLS on the client leg, the
token as a clear-text password, a 10-rule policy). The target leg is plaintext: the
local MariaDB has TLS disabled. It makes a throwaway store, database and user, and
removes the database and user afterwards.
"""
from __future__ import annotations

import os
import re
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


def point_selects(seconds: float, **conn) -> float:
    c = pymysql.connect(autocommit=True, **conn)
    cur = c.cursor()
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        cur.execute("SELECT v FROM bench_kv WHERE id = %s", (n % 1000 + 1,))
        cur.fetchall()
        n += 1
    c.close()
    return n / seconds


def mixed(seconds: float, clients: int = 8, **conn) -> float:
    """mysqlslap's way (N clients, a fixed mix of statements, total queries per second),
    in PyMySQL: mysqlslap itself logs in without a default database, which the relay
    refuses (the database names the connection)."""
    counts = [0] * clients
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        c = pymysql.connect(autocommit=True, **conn)
        cur = c.cursor()
        start.wait()
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            for sql in MIXED:
                cur.execute(sql, ((n * 7 + i) % 1000 + 1,))
                cur.fetchall()
            n += 1
        counts[i] = n * len(MIXED)
        c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10
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
           "AIRLOCK_SECRET_KEY": __import__("cryptography.fernet").fernet.Fernet.generate_key().decode(), "BENCH_PW": pw, "AIRLOCK_MYSQL_PORT": "0", "AIRLOCK_SSH_PORT": "0",
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
        point_selects(1, **relayed)  # warm up (policy snapshot, caches)
        d, r = point_selects(seconds, **direct), point_selects(seconds, **relayed)
        print(f"point selects, 1 connection: direct {d:.0f}/s, relay {r:.0f}/s, ratio {r / d:.2f}")
        md, mr = mixed(seconds, **direct), mixed(seconds, **relayed)
        print(f"mixed load (2 reads : 1 update), 8 clients: direct {md:.0f} q/s, relay {mr:.0f} q/s, "
              f"ratio {mr / md:.2f}")
    finally:
        proc.terminate()
        proc.wait(15)
        with admin() as a, a.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


if __name__ == "__main__":
    main()
