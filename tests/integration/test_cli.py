"""The `airlock` command as users run it: a real subprocess against a real store."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app.db import session_scope
from app.models import AuditEntry, ServiceAccount, Token
from tests.support import processes

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


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _port_env() -> dict[str, str]:
    portal, proxy, relay, ssh, mysql = _free_ports(5)
    return {"AIRLOCK_PORTAL_PORT": str(portal), "AIRLOCK_PROXY_PORT": str(proxy), "AIRLOCK_POSTGRES_PORT": str(relay),
            "AIRLOCK_SSH_PORT": str(ssh), "AIRLOCK_MYSQL_PORT": str(mysql), "PYTHONUNBUFFERED": "1"}


def _next_run(job_id: str) -> float | None:
    """When the scheduler's job store says `job_id` runs next (None before it is added)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with session_scope() as s:
            return s.execute(text("SELECT next_run_time FROM apscheduler_jobs WHERE id = :id"), {"id": job_id}).scalar()
    except DBAPIError:  # no such table yet: the scheduler creates it when it first starts
        return None


def test_up_starts_the_processes_and_stops_cleanly_on_ctrl_c(home):
    ports = _port_env()
    proc = subprocess.Popen([*AIRLOCK, "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **ports})
    lines: list[str] = []
    banner = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "airlock is up" in line:
                banner.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert banner.wait(90), "".join(lines)
        # Past the scheduler's first routine job run (every 10 s): the job store moves the
        # job's next run on when it runs one. APScheduler's lines about it must not be
        # logged at INFO (checked below, after a clean stop has let the run finish).
        deadline = time.monotonic() + 60
        first = None
        while first is None and time.monotonic() < deadline:
            first = _next_run("expire-reviews")
            time.sleep(0.1)
        assert first is not None, "the scheduler never stored its jobs:\n" + "".join(lines)
        while (_next_run("expire-reviews") or 0) <= first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (_next_run("expire-reviews") or 0) > first, "the routine job never ran:\n" + "".join(lines)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(10)
        # Nothing it started outlives it: not a child, nor a relay worker or recording
        # writer of one (a recording writer may take a moment to finish after its worker).
        left = processes.wait_group_gone(proc.pid, 20)
        assert not left, f"still running after `up` stopped: {left}\n" + "".join(lines)
    finally:
        processes.kill(proc)  # a no-op after a clean stop
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "started scheduler" in out
    assert "stopped" in out
    assert "restarting" not in out, out
    # One banner with what a new user needs next.
    ca = str(Path(os.environ["AIRLOCK_HOME"]).resolve() / "ca" / "airlock-ca.pem")
    assert out.count("airlock is up") == 1
    portal = f"http://localhost:{ports['AIRLOCK_PORTAL_PORT']}"  # the public URL follows the portal's port
    for needed in (portal, "admin@localhost", ca, "apply -f policy.yaml", "env SERVICE_ACCOUNT"):
        assert needed in out, needed
    assert "Running job" not in out and "executed successfully" not in out, out


def test_a_port_in_use_stops_up_within_10_s_naming_the_setting(home):
    env = _port_env()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["AIRLOCK_PROXY_PORT"])))
        taken.listen()
        started = time.monotonic()
        proc = subprocess.run([*AIRLOCK, "up"], capture_output=True, text=True, timeout=30,
                              env={**os.environ, **env})
        elapsed = time.monotonic() - started
    assert elapsed < 10
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert f"127.0.0.1:{env['AIRLOCK_PROXY_PORT']}" in proc.stderr and "AIRLOCK_PROXY_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr and "--mode" not in proc.stderr
    assert "started" not in proc.stdout  # refused before any process started


def test_the_supervisor_does_not_restart_a_process_that_failed_on_configuration(home):
    # The port is taken after `up` checked it (or by a process it does not know of): the
    # child itself refuses, and the supervisor stops everything instead of looping.
    env = _port_env()
    code = "import sys; from app.supervisor import run_all; sys.exit(run_all(['relay', 'scheduler']))"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["AIRLOCK_POSTGRES_PORT"])))
        taken.listen()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env})
    out = proc.stdout + proc.stderr
    # Started once and never again (how long the child takes to start depends on the
    # machine's load; `up` itself refuses a taken port before starting anything, above).
    assert out.count("started relay") == 1, out
    assert proc.returncode == 78, out
    assert "AIRLOCK_POSTGRES_PORT" in out and "cannot run with this configuration" in out
    assert "restarting" not in out and "Traceback" not in out
    assert "stopped" in out  # the scheduler it had started was stopped too


def _uninitialised_env(home: Path) -> dict[str, str]:
    # Nothing of the test store (or of other suites' stores) may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    env["AIRLOCK_HOME"] = str(home)
    return env


def _run_in(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*AIRLOCK, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("args", [
    ("apply", "-f", str(POLICY)), ("token", "issue", "etl-agent"), ("token", "list", "etl-agent"),
    ("audit", "verify"), ("audit", "export"), ("env", "etl-agent"), ("ca", "path"), ("proxy",), ("relay",),
    ("portal",), ("scheduler",), ("up",),
])
def test_commands_outside_an_initialised_home_say_so_and_create_nothing(tmp_path, args):
    home = tmp_path / "not-initialised" / "var"
    proc = _run_in(_uninitialised_env(home), *args)
    assert proc.returncode != 0
    assert f"AIRLOCK_HOME {home} has not been initialised" in proc.stderr and "airlock init" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "not-initialised").exists()


def test_the_default_home_is_named_by_its_absolute_path(tmp_path):
    env = _uninitialised_env(tmp_path)
    del env["AIRLOCK_HOME"]
    proc = subprocess.run([*AIRLOCK, "token", "list", "x"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode != 0
    assert f"AIRLOCK_HOME {tmp_path / 'var'} has not been initialised" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    # Help still works anywhere.
    helped = subprocess.run([*AIRLOCK, "apply", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=60)
    assert helped.returncode == 0 and "policy file" in helped.stdout


def test_a_store_file_without_the_schema_is_refused_and_left_alone(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "airlock.db").write_bytes(b"")
    proc = _run_in(_uninitialised_env(home), "apply", "-f", str(POLICY))
    assert proc.returncode != 0 and "has not been initialised" in proc.stderr
    assert (home / "airlock.db").read_bytes() == b"" and sorted(p.name for p in home.iterdir()) == ["airlock.db"]


def test_reapply_with_the_variable_unset_keeps_the_secret_and_a_changed_reference_names_its_line(home, tmp_path):
    run("apply", "-f", str(POLICY))
    unset = {k: v for k, v in os.environ.items() if k not in ("BILLING_TOKEN", "ORDERS_DB_PASSWORD")}
    proc = subprocess.run([*AIRLOCK, "apply", "-f", str(POLICY)], capture_output=True, text=True, env=unset,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no changes" in proc.stdout
    assert "kept the stored secret of connection:orders-db password" in proc.stdout
    with session_scope() as s:
        from app import vault
        from app.models import Connection

        row = s.scalars(select(Connection).where(Connection.name == "orders-db")).one()
        assert vault.decrypt(row.secrets)["password"].reveal() == "p"
    changed = POLICY.read_text().replace("${env:ORDERS_DB_PASSWORD}", "${env:ORDERS_DB_PASSWORD_NEW}")
    path = tmp_path / "changed.yaml"
    path.write_text(changed)
    line = next(i for i, l in enumerate(changed.splitlines(), 1) if "ORDERS_DB_PASSWORD_NEW" in l)
    proc = subprocess.run([*AIRLOCK, "apply", "-f", str(path)], capture_output=True, text=True, env=unset, timeout=120)
    assert proc.returncode == 2
    assert f"changed.yaml:{line}: connections[1].password: environment variable ORDERS_DB_PASSWORD_NEW is not set" \
        in proc.stderr
    assert "nothing was changed" in proc.stderr


def test_an_unreachable_store_is_a_clear_error_for_one_shot_commands(tmp_path):
    env = _uninitialised_env(tmp_path / "home")
    env["AIRLOCK_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:{_free_ports(1)[0]}/airlock"
    proc = _run_in(env, "token", "list", "etl-agent")
    assert proc.returncode == 1
    assert "the store of AIRLOCK_DATABASE_URL cannot be reached" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "home").exists()


def test_a_malformed_port_setting_is_named(home):
    proc = subprocess.run([*AIRLOCK, "up"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "AIRLOCK_PROXY_PORT": "80800"})
    assert proc.returncode == 78
    assert "AIRLOCK_PROXY_PORT must be a port number (0-65535), got '80800'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_token_list_of_an_unknown_account_is_a_clear_error(home):
    proc = run("token", "list", "nobody", check=False)
    assert proc.returncode == 1 and "unknown service account 'nobody'" in proc.stderr
    assert "Traceback" not in proc.stderr
