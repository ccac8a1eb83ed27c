"""SFTP and scp through the relay with the real clients: allowed and denied by path,
each transfer recorded (path, direction, size; never the content); forwarding refused;
garbage and truncated handshakes end only their own connection."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import TARGET_USER, events, ssh, ssh_args, wait_for


def client_opts(relay, world) -> list[str]:
    return ["-o", f"UserKnownHostsFile={relay.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR", "-i", str(world.agent_key), "-F", "/dev/null"]


def sftp(relay, world, batch: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sftp", "-b", "-", "-P", str(relay.port), *client_opts(relay, world), "box@127.0.0.1"],
                          input=batch.encode(), capture_output=True, timeout=60)


def scp(relay, world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["scp", "-P", str(relay.port), *client_opts(relay, world), *args],
                          capture_output=True, timeout=60)


@pytest.fixture
def remote_dir():
    d = Path(f"/tmp/airlock-sftp-{time.time_ns()}")
    d.mkdir()
    (d / "report.txt").write_text("quarterly numbers\n")
    (d / "secret.txt").write_text("hunter2\n")
    user = pwd.getpwnam(TARGET_USER)
    for p in (d, d / "report.txt", d / "secret.txt"):
        shutil.chown(p, user.pw_uid, user.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_upload_and_download_allowed_and_recorded(relay, world, remote_dir, tmp_path):
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(300_000))
    r = sftp(relay, world, f"put {local} {remote_dir}/up.bin\nget {remote_dir}/report.txt {tmp_path}/report.txt\n")
    assert r.returncode == 0, r.stderr
    assert (remote_dir / "up.bin").read_bytes() == local.read_bytes()
    assert (tmp_path / "report.txt").read_text() == "quarterly numbers\n"
    notices = wait_for(lambda: [d for _, k, d in events() if k == "notice" and str(remote_dir) in d.get("path", "")
                                and "sftp" in d] if len([1 for _, k, d in events() if k == "notice"
                                                        and str(remote_dir) in d.get("path", "")]) >= 2 else None)
    assert {"sftp": "upload", "path": f"{remote_dir}/up.bin", "bytes": 300_000} in notices
    assert {"sftp": "download", "path": f"{remote_dir}/report.txt", "bytes": 18} in notices
    assert not [1 for _, _, d in events() if "hunter2" in str(d) or "quarterly" in str(d)]  # no content


def test_denied_by_path(relay, world, remote_dir, tmp_path):
    local = tmp_path / "x.conf"
    local.write_text("x\n")
    r = sftp(relay, world, f"put {local} /etc/airlock-should-not-exist.conf\n")
    assert r.returncode != 0
    assert b"Permission denied" in r.stderr or b"airlock" in r.stderr
    assert not Path("/etc/airlock-should-not-exist.conf").exists()
    r = sftp(relay, world, f"get {remote_dir}/secret.txt {tmp_path}/secret.txt\n")
    assert r.returncode != 0 and not (tmp_path / "secret.txt").exists()
    found = wait_for(lambda: [d for _, k, d in events() if k == "decision" and d.get("rule") == "no-secret-downloads"])
    assert found and found[-1]["status"] == "denied"


def test_a_held_sftp_operation_runs_once_approved(relay, world, remote_dir, tmp_path):
    from .test_ssh_exec import vote_elsewhere

    (remote_dir / "held-report.txt").write_text("approved numbers\n")
    # A download is several operations (lstat, then open): each is held and approved on its
    # own, here for a window of 10 minutes (an sftp client repeats its lstat on every run,
    # which an approve-once would not cover a second time).
    approved = []
    for _ in range(4):
        r = sftp(relay, world, f"get {remote_dir}/held-report.txt {tmp_path}/held.txt\n")
        if r.returncode == 0:
            break
        assert not (tmp_path / "held.txt").exists()
        m = re.search(rb"review (\d+) needed for sftp (\w+) " + str(remote_dir).encode(), r.stderr)
        assert m, r.stderr
        approved.append(m.group(2).decode())
        vote_elsewhere(relay.env, int(m.group(1)), "approve", window=10)
    assert r.returncode == 0, r.stderr
    assert "open" in approved
    assert (tmp_path / "held.txt").read_text() == "approved numbers\n"


def test_scp_goes_through_the_same_checks(relay, world, remote_dir, tmp_path):
    local = tmp_path / "via-scp.txt"
    local.write_text("copied\n")
    r = scp(relay, world, str(local), f"box@127.0.0.1:{remote_dir}/via-scp.txt")
    assert r.returncode == 0, r.stderr
    assert (remote_dir / "via-scp.txt").read_text() == "copied\n"
    r = scp(relay, world, str(local), "box@127.0.0.1:/etc/airlock-scp.txt")
    assert r.returncode != 0 and not Path("/etc/airlock-scp.txt").exists()
    r = scp(relay, world, f"box@127.0.0.1:{remote_dir}/secret.txt", str(tmp_path / "s.txt"))
    assert r.returncode != 0 and not (tmp_path / "s.txt").exists()


def test_port_forwarding_is_refused_unless_a_rule_allows_it(relay, world):
    r = ssh(relay, None, key=world.agent_key, extra=("-W", "127.0.0.1:5432"), input=b"")
    assert r.stdout == b""  # nothing of the target came through
    found = wait_for(lambda: [d for _, k, d in events() if k == "decision" and d.get("rule") == "no-allow-rule"
                              and d.get("operation") == "forward to 127.0.0.1:5432"])
    assert found and found[-1]["status"] == "denied"
    # forward-to-the-target-sshd allows this one: the target's own banner comes back
    proc = subprocess.Popen(ssh_args(relay, key=world.agent_key, extra=("-W", f"127.0.0.1:{world.sshd.port}")),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    banner = proc.stdout.readline()
    proc.kill()
    proc.wait(10)
    assert banner.startswith(b"SSH-2.0-OpenSSH")


def test_garbage_and_truncated_handshakes_close_only_their_connection(relay, world):
    bad = []
    for payload in (b"GET / HTTP/1.1\r\n\r\n", b"SSH-2.0-x\r\n" + os.urandom(4000), b"SSH-2.0-trunc", b"\x00" * 70000):
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        try:
            s.sendall(payload)
        except OSError:
            pass
        bad.append(s)
    half = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    half.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")  # and then nothing: it stays open on its own
    r = ssh(relay, "echo still-serving", world.tokens["agent"])
    assert r.returncode == 0 and r.stdout == b"still-serving\n", r.stderr
    for s in bad[:2] + bad[3:]:
        s.settimeout(10)
        try:
            while s.recv(65536):
                pass  # the relay's banner, then the close
        except (ConnectionResetError, OSError):
            pass
        s.close()
    half.close()
    bad[2].close()
    assert relay.alive()
