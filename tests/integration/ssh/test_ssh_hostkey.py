"""`airlock init` makes the relay's persistent host key and prints its fingerprint."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from cryptography.fernet import Fernet

from .conftest import ROOT


def test_init_creates_the_host_key_once_and_prints_its_fingerprint(tmp_path):
    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}, "AIRLOCK_HOME": str(home),
           "AIRLOCK_DATABASE_URL": f"sqlite:///{tmp_path / 'airlock.db'}",
           "AIRLOCK_SECRET_KEY": Fernet.generate_key().decode()}

    def init() -> str:
        out = subprocess.run([sys.executable, "-m", "app.cli", "init"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        m = re.search(r"SSH relay host key fingerprint: (SHA256:\S+)", out.stdout)
        assert m, out.stdout
        return m.group(1)

    first = init()
    pub = home / "ssh" / "ssh_host_ed25519_key.pub"
    keygen = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
    assert keygen.stdout.split()[1] == first  # what the ssh client will show
    assert oct((home / "ssh" / "ssh_host_ed25519_key").stat().st_mode & 0o777) == "0o600"
    assert init() == first  # kept across runs: runtimes' pins stay valid
