"""The SSH relay end to end: a real OpenSSH sshd as the target, the real ssh/sftp clients.

Session fixtures:
- `sshd`: /usr/sbin/sshd on a free port, with its own host key and authorized_keys in a
  tmp dir (run as root, as .ci/run does: `StrictModes no`, `UsePAM no`); the relay logs
  in as root with the key the vault holds.
- `world`: a migrated SQLite store with the policy below and tokens.
- `relay`: `airlock relay` in a subprocess, its SSH listener on a free port.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import suite_store
from tests.support import relay as support
from tests.support.relay import ROOT, Relay, _store, free_port, stop_relay, wait_for  # noqa: F401 - the suite's API

POLICY = """
version: 1
service_accounts:
  - {{name: agent, groups: [agents], public_keys: ["{agent_key}"]}}
  - {{name: ci, groups: [ci]}}
  - {{name: stranger}}
  - {{name: leaver}}
users:
  - {{email: ops@example.com, groups: [ops], roles: [approver]}}
connections:
  - {{name: box, type: ssh, address: "127.0.0.1:{port}", username: {user}, private_key: "${{env:SSH_TARGET_KEY}}",
     host_key: "{host_key}", owner: ops@example.com}}
  - {{name: impostor, type: ssh, address: "127.0.0.1:{port}", username: {user}, private_key: "${{env:SSH_TARGET_KEY}}",
     host_key: "{wrong_host_key}", owner: ops@example.com}}
grants:
  - {{service_account: agent, connection: box}}
  - {{service_account: agent, connection: impostor}}
  - {{service_account: ci, connection: box}}
  - {{service_account: leaver, connection: box}}
rules:
  - name: no-rm-rf
    match: {{protocol: ssh, command: ["regex:^rm -[a-zA-Z]*r"]}}
    action: deny
    message: recursive deletes are not allowed
  - name: no-opaque-code
    match: {{protocol: ssh, kind: [exec]}}
    action: deny
    message: code airlock cannot read is refused
  - name: no-shells-for-ci
    match: {{protocol: ssh, kind: [shell], service_account: [ci]}}
    action: deny
    message: interactive shells are not allowed for CI
  - name: touching-flags-needs-ops
    match: {{protocol: ssh, command: ["touch /tmp/airlock-flag-*"]}}
    action: review
    approvers: {{groups: [ops]}}
    hold: 30s
  - name: quick-review
    match: {{protocol: ssh, command: ["touch /tmp/airlock-quick-*"]}}
    action: review
    approvers: {{groups: [ops]}}
    hold: 1s
  - name: forward-to-the-target-sshd
    match: {{protocol: ssh, attributes: [port_forwarding], targets: ["127.0.0.1:{port}"]}}
    action: allow
  - name: reports-need-ops
    match: {{protocol: ssh, attributes: [sftp], path: ["*/held-report*"]}}
    action: review
    approvers: {{groups: [ops]}}
    hold: 1s
  - name: etc-is-read-only
    match: {{protocol: ssh, attributes: [sftp], kind: [write], path: ["/etc/*"]}}
    action: deny
    message: nothing is written to /etc over sftp
  - name: no-secret-downloads
    match: {{protocol: ssh, attributes: [sftp], path: ["*/secret*"]}}
    action: deny
    message: secrets stay on the box
"""


def keygen(path: Path, kind: str = "ed25519") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


@dataclass
class Sshd:
    port: int
    dir: Path
    host_key: str
    client_key: Path  # what the vault holds
    proc: subprocess.Popen


TARGET_USER = "airlock-target"


def _target_user() -> None:
    """A plain user to log in as: sshd signals a session (and drops privileges) only for
    non-root logins, and the tests need signals to pass through."""
    if subprocess.run(["getent", "passwd", TARGET_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TARGET_USER], check=True)
    # useradd leaves the account locked ("!"), and without PAM sshd refuses locked accounts.
    subprocess.run(["usermod", "-p", "*", TARGET_USER], check=True)


@pytest.fixture(scope="session")
def sshd() -> Sshd:
    _target_user()
    # Outside pytest's tmp (mode 700): sshd reads authorized_keys as the target user.
    d = Path(tempfile.mkdtemp(prefix="airlock-sshd-"))
    d.chmod(0o755)
    host_key = keygen(d / "host_key")
    client_pub = keygen(d / "relay_key")
    (d / "authorized_keys").write_text(client_pub + "\n")
    (d / "authorized_keys").chmod(0o644)
    port = free_port()
    (d / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PidFile {d / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
MaxStartups 200
MaxSessions 50
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()  # a slow start must not leave it running
                _, err = proc.communicate(timeout=10)
                pytest.fail(f"sshd did not start: {err.decode() if err else ''}")
            time.sleep(0.05)
    yield Sshd(port, d, host_key, d / "relay_key", proc)
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class World:
    env: dict[str, str]
    sshd: Sshd
    tokens: dict[str, str]
    agent_key: Path  # the runtime's key, registered to `agent`
    dir: Path


@pytest.fixture(scope="session")
def world(tmp_path_factory, sqlite_template, sshd) -> World:
    d = tmp_path_factory.mktemp("sshworld")
    agent_pub = keygen(d / "agent_key")
    wrong = keygen(d / "wrong_host_key")
    with suite_store(d, sqlite_template) as env:
        policy = POLICY.format(user=TARGET_USER, port=sshd.port, host_key=sshd.host_key, wrong_host_key=wrong, agent_key=agent_pub)
        tokens, _ = support.seed(policy, {"SSH_TARGET_KEY": sshd.client_key.read_text()},
                                 ("agent", "ci", "stranger", "leaver"))
        yield World(env, sshd, tokens, d / "agent_key", d)


def start_relay(world: World, **extra: str) -> Relay:
    relay = support.start_relay("ssh", world.env, **{"AIRLOCK_RELAY_WORKERS": "1", **extra})
    # Pin the relay's host key as a runtime would (the fingerprint `airlock init` prints).
    pub = (Path(world.env["AIRLOCK_HOME"]) / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    relay.known_hosts = world.dir / f"known_hosts-{relay.port}"  # one per relay: tests start extra ones
    relay.known_hosts.write_text(f"[127.0.0.1]:{relay.port} {pub[0]} {pub[1]}\n")
    return relay


@pytest.fixture(scope="session")
def relay(world) -> Relay:
    yield from support.running(start_relay(world))


def ssh_args(relay: Relay, connection: str = "box", *, key: Path | None = None, tty: bool = False,
             extra: tuple[str, ...] = ()) -> list[str]:
    args = ["ssh", "-p", str(relay.port), "-o", f"UserKnownHostsFile={relay.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR", "-F", "/dev/null"]
    if key is not None:
        args += ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                 "-o", "PreferredAuthentications=publickey"]
    else:
        args += ["-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
                 "-o", "NumberOfPasswordPrompts=1"]
    args += ["-tt"] if tty else ["-T"]
    return args + list(extra) + [f"{connection}@127.0.0.1"]


def ssh(relay: Relay, command: str | None, token: str | None = None, *, connection: str = "box",
        key: Path | None = None, input: bytes | None = None, timeout: float = 60,
        extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The real OpenSSH client: with a key (BatchMode), or the token through sshpass."""
    args = ssh_args(relay, connection, key=key, extra=extra) + ([command] if command is not None else [])
    env = dict(os.environ)
    if key is None:
        env["SSHPASS"] = token or ""
        args = ["sshpass", "-e", *args]
    return subprocess.run(args, input=input, capture_output=True, timeout=timeout, env=env)


def events(protocol: str = "ssh"):
    return support.events(protocol)


if shutil.which("sshpass") is None:  # .ci/run installs it; without it the token tests cannot run
    raise RuntimeError("sshpass is required by the SSH relay tests (apt-get install sshpass)")
