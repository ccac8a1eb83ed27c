"""The relay's persistent SSH host key: made once (by `airlock init` or the first start)
and kept in $AIRLOCK_HOME/ssh/, so runtimes can pin its fingerprint."""
from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from app.config import settings


def host_key_path() -> Path:
    return settings().home / "ssh" / "ssh_host_ed25519_key"


def ensure_host_key() -> tuple[Path, bool]:
    """The key's path, and whether it was created now."""
    path = host_key_path()
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="airlock ssh relay")
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key())
    os.replace(tmp, path)  # two processes starting at once keep one key
    path.with_suffix(".pub").write_bytes(key.export_public_key())
    return path, True


def load_host_key() -> asyncssh.SSHKey:
    return asyncssh.read_private_key(str(ensure_host_key()[0]))


def fingerprint() -> str:
    """`SHA256:...`, as `ssh-keygen -lf` and the ssh client print it."""
    return load_host_key().get_fingerprint("sha256")


def public_line() -> str:
    return load_host_key().export_public_key().decode().strip()
