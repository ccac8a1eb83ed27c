"""The `airlock` command as users run it: a real subprocess against a real store."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app.db import session_scope
from app.models import AuditEntry, ServiceAccount, Token

POLICY = Path(__file__).parent.parent / "data" / "policy.yaml"
AIRLOCK = [sys.executable, "-m", "app.cli"]


def run(*args, env_extra=None, check=True):
    env = {**os.environ, "BILLING_TOKEN": "b", "ORDERS_DB_PASSWORD": "p", **(env_extra or {})}
    proc = subprocess.run([*AIRLOCK, *args], capture_output=True, text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"airlock {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def home(store, tmp_path):
    run("init")
    return tmp_path


def test_init_is_repeatable_and_prints_the_admin_password_once(store):
    first = run("init")
    assert "password:" in first.stdout
    second = run("init")
    assert "password:" not in second.stdout
    assert "airlock is ready" in second.stdout


def test_apply_then_reapply_reports_no_changes(home):
    out = run("apply", "-f", str(POLICY)).stdout
    assert "created" in out and "connection:orders-db" in out
    assert "no changes" in run("apply", "-f", str(POLICY)).stdout


def test_invalid_policy_names_line_and_field_and_changes_nothing(home, tmp_path):
    run("apply", "-f", str(POLICY))
    bad = POLICY.read_text().replace("    approvers: {groups: [dba], count: 1}", "    approvers: {groups: [dba], count: zero}")
    bad = bad.replace("- name: no-ddl", "- name: no-ddl-2")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    with session_scope() as s:
        before = [(e.seq, e.hash) for e in s.scalars(select(AuditEntry))]
    proc = run("apply", "-f", str(path), check=False)
    assert proc.returncode == 2
    line = next(i for i, l in enumerate(bad.splitlines(), 1) if "count: zero" in l)
    assert f"bad.yaml:{line}:" in proc.stderr
    assert "approvers.count" in proc.stderr
    assert "nothing was changed" in proc.stderr
    with session_scope() as s:
        assert [(e.seq, e.hash) for e in s.scalars(select(AuditEntry))] == before


def test_token_issue_prints_a_token_stored_only_as_a_hash(home):
    run("apply", "-f", str(POLICY))
    proc = run("token", "issue", "etl-agent", "--ttl", "2h")
    token = proc.stdout.strip()
    assert token.startswith("alk_") and len(token) > 30
    assert "expires" in proc.stderr
    with session_scope() as s:
        row = s.scalars(select(Token)).one()
        assert token not in row.token_hash
        assert (row.expires_at - row.created_at).total_seconds() == pytest.approx(7200, abs=5)
    listed = run("token", "list", "etl-agent").stdout
    assert token not in listed and str(row.id) in listed
    run("token", "revoke", str(row.id))
    assert "revoked" in run("token", "list", "etl-agent").stdout


def test_token_issue_errors_are_clear(home):
    run("apply", "-f", str(POLICY))
    proc = run("token", "issue", "nobody", check=False)
    assert proc.returncode != 0 and "nobody" in proc.stderr
    proc = run("token", "issue", "etl-agent", "--ttl", "soon", check=False)
    assert proc.returncode != 0 and "duration" in proc.stderr


def test_audit_verify_and_export(home):
    run("apply", "-f", str(POLICY))
    run("token", "issue", "etl-agent")
    ok = run("audit", "verify")
    assert "OK" in ok.stdout
    lines = [json.loads(l) for l in run("audit", "export").stdout.splitlines()]
    assert [l["action"] for l in lines][-2:] == ["policy.apply", "token.issue"] or "token.issue" in [l["action"] for l in lines]
    assert all({"seq", "hash", "prev_hash", "actor", "action"} <= set(l) for l in lines)
    assert all(lines[i]["hash"] == lines[i + 1]["prev_hash"] for i in range(len(lines) - 1))
    # Edit one entry behind airlock's back: verify must fail and name it.
    victim = lines[1]["seq"]
    with session_scope() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == victim).values(actor="mallory"))
    bad = run("audit", "verify", check=False)
    assert bad.returncode == 1
    assert f"entry {victim}" in bad.stderr


def test_up_starts_the_processes_and_stops_cleanly_on_ctrl_c(home):
    proc = subprocess.Popen([*AIRLOCK, "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        time.sleep(6)
        assert proc.poll() is None, proc.stdout.read()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "started scheduler" in out
    assert "stopped" in out
    assert "restarting" not in out, out
