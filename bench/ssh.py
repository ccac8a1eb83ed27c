"""SSH relay vs direct: 200 sequential `ssh host true`, and `cat` of a 100 MB file.

    PYTHONPATH=. .venv/bin/python bench/ssh.py [--runs 200] [--mb 100]

Starts its own sshd (as the SSH integration tests do: root, a throwaway config and the
`airlock-target` user), a SQLite store and `airlock relay`, then times the real OpenSSH
client both ways in the same invocation. Targets: sequential ≤ 1.5× direct, bulk ≥ 0.5×.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import db  # noqa: E402
from app.db import session_scope  # noqa: E402
from app.identity import issue_token  # noqa: E402
from app.inventory import apply_policy  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.policy import load_policy  # noqa: E402
from tests.conftest import suite_store  # noqa: E402
from tests.integration.ssh.conftest import (TARGET_USER, _target_user, free_port, keygen,  # noqa: E402
                                            start_relay, stop_relay)

POLICY = """
version: 1
service_accounts:
  - {{name: bench, public_keys: ["{key}"]}}
connections:
  - {{name: box, type: ssh, address: "127.0.0.1:{port}", username: {user}, private_key: "${{env:KEY}}",
     host_key: "{host_key}"}}
grants:
  - {{service_account: bench, connection: box}}
rules:
  - name: no-rm-rf
    match: {{protocol: ssh, command: ["regex:^rm -[a-zA-Z]*r"]}}
    action: deny
"""

COMMON = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
          "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-F", "/dev/null", "-T"]


class _World:
    def __init__(self, env, d):
        self.env, self.dir = env, d


def sequential(args: list[str], runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        subprocess.run(args + ["true"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bulk(args: list[str], path: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run(args + [f"cat {path}"], check=True, stdout=subprocess.PIPE).stdout
    elapsed = time.perf_counter() - start
    assert len(out) == path.stat().st_size
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--mb", type=int, default=100)
    opts = ap.parse_args()
    _target_user()
    d = Path(tempfile.mkdtemp(prefix="airlock-bench-ssh-"))
    d.chmod(0o755)
    try:
        host_key = keygen(d / "host_key")
        target_pub = keygen(d / "relay_key")
        bench_pub = keygen(d / "bench_key")
        (d / "authorized_keys").write_text(f"{target_pub}\n{bench_pub}\n")
        (d / "authorized_keys").chmod(0o644)
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            f"PidFile {d / 'sshd.pid'}\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
            "PermitRootLogin no\nLogLevel ERROR\nMaxStartups 200\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        template = d / "template.db"
        upgrade(f"sqlite:///{template}")
        db.reset_engines()  # closes the engine: the WAL lands in the file before it is copied
        big = Path(f"/tmp/airlock-bench-{opts.mb}mb.bin")
        if not big.exists() or big.stat().st_size != opts.mb << 20:
            with open(big, "wb") as fh:
                for _ in range(opts.mb):
                    fh.write(os.urandom(1 << 20))
        big.chmod(0o644)
        with suite_store(d, template) as env:
            with session_scope() as s:
                apply_policy(s, load_policy(POLICY.format(key=bench_pub, port=port, user=TARGET_USER,
                                                          host_key=host_key)),
                             actor="bench", environ={"KEY": (d / "relay_key").read_text()})
                issue_token(s, "bench", timedelta(hours=1))
            relay = start_relay(_World(env, d))
            try:
                via = ["ssh", "-p", str(relay.port), "-i", str(d / "bench_key"), *COMMON, "box@127.0.0.1"]
                direct = ["ssh", "-p", str(port), "-i", str(d / "bench_key"), *COMMON, f"{TARGET_USER}@127.0.0.1"]
                sequential(via, 3), sequential(direct, 3)  # warm up both paths
                t_direct = sequential(direct, opts.runs)
                t_via = sequential(via, opts.runs)
                b_direct = min(bulk(direct, big) for _ in range(3))
                b_via = min(bulk(via, big) for _ in range(3))
            finally:
                stop_relay(relay)
        mb = opts.mb
        print(f"| {opts.runs} × `ssh host true` | {t_direct:.2f} s ({t_direct / opts.runs * 1000:.1f} ms each) | "
              f"{t_via:.2f} s ({t_via / opts.runs * 1000:.1f} ms each) | {t_via / t_direct:.2f}× the time |")
        print(f"| `cat` of {mb} MB | {mb / b_direct:.0f} MB/s | {mb / b_via:.0f} MB/s | "
              f"{b_direct / b_via:.2f}× the throughput |")
    finally:
        if "sshd" in locals():
            sshd.terminate()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
