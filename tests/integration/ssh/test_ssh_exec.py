"""Exec requests through the relay with the real OpenSSH client: auth, pinning, allow,
deny (126), review (held, approved from another process, rejected), passthrough."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncssh

from .conftest import ROOT, events, ssh, ssh_args, wait_for

VOTE = """
import sys
from app.approvals import vote
from app.db import session_scope
with session_scope() as s:
    vote(s, int(sys.argv[1]), voter_email="ops@example.com", decision=sys.argv[2], reason=sys.argv[3],
         window_minutes=int(sys.argv[4]) or None)
"""


def vote_elsewhere(env, review_id: int, decision: str, reason: str = "checked by the test", window: int = 0) -> None:
    subprocess.run([sys.executable, "-c", VOTE, str(review_id), decision, reason, str(window)], cwd=ROOT, env=env,
                   check=True, timeout=60)


def test_token_login_runs_the_command_on_the_target(relay, world):
    r = ssh(relay, "echo hello from $(hostname)", world.tokens["agent"])
    # $(hostname) is computed when it runs: opaque, refused by no-opaque-code
    assert r.returncode == 126
    r = ssh(relay, "echo hello; id -un", world.tokens["agent"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["hello", "airlock-target"]


def test_key_login(relay, world):
    r = ssh(relay, "echo via-key", key=world.agent_key)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"via-key\n"


def test_unregistered_key_and_bad_token_are_refused(relay, world, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    r = ssh(relay, "echo no", key=tmp_path / "k")
    assert r.returncode == 255 and b"Permission denied" in r.stderr
    r = ssh(relay, "echo no", "alk_not_a_real_token")
    assert r.returncode != 0 and b"no\n" not in r.stdout
    r = ssh(relay, "echo no", "")
    assert r.returncode != 0 and b"no\n" not in r.stdout


def test_no_grant_is_denied(relay, world):
    r = ssh(relay, "echo hi", world.tokens["stranger"])
    assert r.returncode == 126
    assert b"airlock: denied" in r.stderr and b"no-grant" in r.stderr


def test_wrong_target_host_key_is_refused_with_a_clear_message(relay, world):
    r = ssh(relay, "echo hi", world.tokens["agent"], connection="impostor")
    assert r.returncode == 255
    assert b"does not match the host_key pinned for connection 'impostor'" in r.stderr
    assert b"hi\n" not in r.stdout


def test_exit_status_stdout_and_stderr_pass_through(relay, world):
    r = ssh(relay, "echo out; echo err >&2; exit 7", world.tokens["agent"])
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")


def test_stdin_passes_through(relay, world):
    data = bytes(range(256)) * 4096
    r = ssh(relay, "cat", world.tokens["agent"], input=data)
    assert r.returncode == 0 and r.stdout == data


def test_denied_is_126_with_the_rule_message(relay, world, tmp_path):
    r = ssh(relay, "mkdir -p /tmp/airlock-keep && rm -rf /tmp/airlock-keep", world.tokens["agent"])
    assert r.returncode == 126
    assert r.stderr == b"airlock: denied by rule no-rm-rf: recursive deletes are not allowed\n"
    assert not Path("/tmp/airlock-keep").exists()  # nothing of the line ran


def test_signals_pass_through(relay, world):
    async def run() -> tuple:
        async with asyncssh.connect("127.0.0.1", relay.port, username="box", password=world.tokens["agent"],
                                    known_hosts=str(relay.known_hosts), client_keys=None) as conn:
            proc = await conn.create_process("sleep 30")
            await asyncio.sleep(1)
            proc.send_signal("TERM")
            await asyncio.wait_for(proc.wait_closed(), 20)
            return proc.exit_status, proc.exit_signal

    status, signal = asyncio.run(run())
    assert signal is not None and signal[0] == "TERM", (status, signal)


def _held(relay, world, command: str, decision: str | None, reason: str = "checked by the test"):
    """Run `command`; once stderr names a review, vote on it from another process."""
    import os

    from .conftest import ssh_args

    env = {**os.environ, "SSHPASS": world.tokens["agent"]}
    proc = subprocess.Popen(["sshpass", "-e", *ssh_args(relay), command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    first = proc.stderr.readline().decode()
    m = re.search(r"review (\d+) needed, waiting for approval: (\S+)", first)
    assert m, first
    if decision:
        vote_elsewhere(relay.env, int(m.group(1)), decision, reason)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, first + err.decode(), out, int(m.group(1))


def test_review_held_then_approved_from_another_process(relay, world):
    flag = Path(f"/tmp/airlock-flag-{time.time_ns()}")
    code, err, out, review_id = _held(relay, world, f"touch {flag} && echo done", "approve")
    assert code == 0, err
    assert out == b"done\n" and flag.exists()
    assert f"approved in review {review_id}" in err
    flag.unlink()


def test_review_rejected_exits_126_with_the_reason(relay, world):
    flag = Path(f"/tmp/airlock-flag-{time.time_ns()}")
    code, err, out, review_id = _held(relay, world, f"touch {flag}", "reject", "not during the freeze")
    assert code == 126 and out == b""
    assert f"review {review_id} was rejected: not during the freeze" in err
    assert not flag.exists()


def test_review_still_pending_after_the_hold(relay, world):
    flag = Path(f"/tmp/airlock-quick-{time.time_ns()}")
    r = ssh(relay, f"touch {flag}", world.tokens["agent"])
    assert r.returncode == 126
    assert b"is still pending" in r.stderr and b"run the same command again" in r.stderr
    assert not flag.exists()


def test_run_id_tags_the_session(relay, world):
    r = ssh(relay, "echo tagged", world.tokens["agent"], extra=("-o", "SetEnv=AIRLOCK_RUN=run-ssh-42"))
    assert r.returncode == 0, r.stderr
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import RecordedSession

    def tagged():
        with session_scope() as s:
            return s.scalars(select(RecordedSession).where(RecordedSession.run_id == "run-ssh-42")).all()

    assert wait_for(tagged)


def test_decisions_are_recorded(relay, world):
    ssh(relay, "rm -rf /tmp/nothing-here", world.tokens["agent"])
    found = wait_for(lambda: [d for _, k, d in events()
                              if k == "decision" and d.get("operation") == "rm -rf /tmp/nothing-here"])
    assert found and found[-1]["rule"] == "no-rm-rf" and found[-1]["status"] == "denied"
    assert found[-1]["kind"] == "write"


def test_nothing_runs_once_the_credential_expires(relay, world):
    from datetime import timedelta

    from app.db import session_scope
    from app.identity import issue_token

    with session_scope() as s:
        issued = issue_token(s, "agent", timedelta(seconds=3))

    async def run() -> tuple:
        async with asyncssh.connect("127.0.0.1", relay.port, username="box", password=issued.token,
                                    known_hosts=str(relay.known_hosts), client_keys=None) as conn:
            first = await conn.run("echo before", check=False)
            await asyncio.sleep(max(0.0, issued.expires_at.timestamp() - time.time()) + 0.5)
            second = await conn.run("echo after", check=False)
            return first, second

    first, second = asyncio.run(run())
    assert (first.exit_status, first.stdout) == (0, "before\n")
    assert second.exit_status == 126 and "expired" in second.stderr and second.stdout == ""


def test_approve_once_binds_the_exact_command_line(relay, world):
    stamp = time.time_ns()
    line = f"touch /tmp/airlock-quick-{stamp}"

    def pending(command: str) -> int:
        r = ssh(relay, command, world.tokens["agent"])
        assert r.returncode == 126 and b"is still pending" in r.stderr, r.stderr
        return int(re.search(rb"review (\d+) is still pending", r.stderr).group(1))

    review_id = pending(line)
    vote_elsewhere(relay.env, review_id, "approve")
    assert pending(line + " ") != review_id  # not the same line: a review of its own
    r = ssh(relay, line, world.tokens["agent"])
    assert r.returncode == 0 and f"approved in review {review_id}".encode() in r.stderr, r.stderr
    assert Path(f"/tmp/airlock-quick-{stamp}").exists()
    assert pending(line) != review_id  # used once: the next run asks again
    Path(f"/tmp/airlock-quick-{stamp}").unlink()


def test_agent_forwarding_is_refused(relay, world, tmp_path):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        assert wait_for(sock.exists)
        import os

        args = ssh_args(relay, key=world.agent_key, extra=("-A",)) + ["printenv SSH_AUTH_SOCK || echo none"]
        r = subprocess.run(args, capture_output=True, timeout=60, env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                           check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"none\n"  # no agent socket reached the target
    finally:
        agent.terminate()
        agent.wait(10)


def test_a_relay_with_several_workers_serves_ssh(world):
    from .conftest import start_relay, stop_relay

    relay = start_relay(world, AIRLOCK_RELAY_WORKERS="2")
    try:
        for i in range(4):
            r = ssh(relay, f"echo worker-{i}", world.tokens["agent"])
            assert (r.returncode, r.stdout) == (0, f"worker-{i}\n".encode()), r.stderr
    finally:
        stop_relay(relay)
