"""A forked worker (app/relay/workers.py) never shares an SQLite connection with its parent.

Each case runs in a fresh interpreter: forking the test process itself (threads of other
tests, pytest's own state) is what the rule is about, not something to do here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, os, sys
from sqlalchemy import text
from app import db

url, hold = sys.argv[1], sys.argv[2] == "hold"
store = os.path.realpath(url.split("///", 1)[1])
eng = db.engine_for(url)
with eng.begin() as c:
    c.execute(text("CREATE TABLE IF NOT EXISTS t (who TEXT)"))
    c.execute(text("INSERT INTO t VALUES ('parent before')"))
held = eng.connect() if hold else None  # in use across the fork (what must never happen)
if held is not None:
    held.execute(text("SELECT count(*) FROM t")).scalar()


def store_fds():
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(store):
            found.append(target[len(store):] or "db")
    return sorted(found)


r, w = os.pipe()
pid = os.fork()
if pid == 0:
    code = 0
    try:
        report = {"inherited_fds": store_fds(), "fresh_pool": eng.pool.checkedin() == 0 and eng.pool.checkedout() == 0,
                  "inherited_pools_kept": len(db._INHERITED)}
        with db.engine_for(url).begin() as c:  # the worker's own connection
            c.execute(text("INSERT INTO t VALUES ('child')"))
        os.write(w, json.dumps(report).encode())
    except BaseException as exc:
        os.write(w, json.dumps({"error": repr(exc)}).encode())
        code = 1
    finally:
        os._exit(code)
os.close(w)
child = json.loads(os.read(r, 65536))
_, status = os.waitpid(pid, 0)
if held is not None:  # the parent's connection in use is untouched by the fork
    held.execute(text("INSERT INTO t VALUES ('parent held')"))
    held.commit()
    held.close()
with eng.connect() as c:
    rows = sorted(r[0] for r in c.execute(text("SELECT who FROM t")))
    check = c.execute(text("PRAGMA integrity_check")).scalar()
print(json.dumps({"child": child, "status": status, "rows": rows, "integrity": check}))
"""


def _run(tmp_path: Path, hold: bool) -> tuple[dict, str]:
    url = f"sqlite:///{tmp_path / 'airlock.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIRLOCK_HOME": str(tmp_path), "AIRLOCK_DATABASE_URL": url}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, url, "hold" if hold else "idle"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_a_forked_child_inherits_no_open_store_connection(tmp_path):
    out, stderr = _run(tmp_path, hold=False)
    # The parent's pooled connection (the store file, its WAL and shared memory) was
    # closed before the fork: the child opens its own.
    assert out["child"]["inherited_fds"] == [], out
    assert out["child"]["fresh_pool"] is True
    assert out["status"] == 0 and out["rows"] == ["child", "parent before"]
    assert out["integrity"] == "ok"
    assert "fork()" not in stderr


def test_a_connection_in_use_at_fork_is_reported_and_left_to_its_user(tmp_path):
    out, stderr = _run(tmp_path, hold=True)
    assert "fork() while 1 connection(s)" in stderr and "airlock.db" in stderr
    # The child got a new, empty pool and keeps the inherited one referenced, so that
    # garbage collection never closes the parent's connection from the child.
    assert out["child"]["fresh_pool"] is True and out["child"]["inherited_pools_kept"] >= 1
    assert out["status"] == 0
    assert out["rows"] == ["child", "parent before", "parent held"]
    assert out["integrity"] == "ok"
