"""Target credentials, encrypted at rest with Fernet.

The key comes from AIRLOCK_SECRET_KEY or from `$AIRLOCK_HOME/secret.key` (created with
mode 0600 on first use). Policy files refer to secrets as `${env:NAME}` or
`${file:PATH}`; they are resolved when the policy is applied, encrypted, and never
written anywhere in clear.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from cryptography.fernet import Fernet, InvalidToken

from app.config import settings

REF = re.compile(r"\$\{(env|file):([^}]+)\}")


class VaultError(RuntimeError):
    """A secret could not be resolved or decrypted. The message never holds a secret."""


class Secret:
    """A secret string that will not show itself in logs, reprs, f-strings or tracebacks.

    Call `reveal()` at the one place the clear value is needed (injecting it).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def load_key(home: Path | None = None, *, create: bool = True) -> bytes:
    configured = settings().secret_key
    if configured:
        return _checked(configured.encode(), "AIRLOCK_SECRET_KEY")
    path = (home or settings().home) / "secret.key"
    if path.exists():
        return _checked(path.read_bytes().strip(), str(path))
    if not create:
        raise VaultError(f"no secret key: set AIRLOCK_SECRET_KEY or run `airlock init` ({path} is missing)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: two processes starting at once must not overwrite each other's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _checked(path.read_bytes().strip(), str(path))
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _checked(key: bytes, origin: str) -> bytes:
    try:
        Fernet(key)
    except (ValueError, TypeError) as exc:
        raise VaultError(f"the secret key from {origin} is not a valid Fernet key") from exc
    return key


@lru_cache(maxsize=4)
def _fernet(key: bytes) -> Fernet:
    return Fernet(key)


def fernet() -> Fernet:
    return _fernet(load_key())


def encrypt(secrets: Mapping[str, Any]) -> str:
    plain = {k: (v.reveal() if isinstance(v, Secret) else v) for k, v in secrets.items()}
    return fernet().encrypt(json.dumps(plain, sort_keys=True).encode()).decode()


def decrypt(token: str | None) -> dict[str, Secret]:
    if not token:
        return {}
    try:
        data = json.loads(fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise VaultError("stored credentials could not be decrypted (wrong AIRLOCK_SECRET_KEY?)") from exc
    return {k: Secret(str(v)) for k, v in data.items()}


def resolve(value: str, *, environ: Mapping[str, str] | None = None) -> Secret:
    """Replace `${env:NAME}` and `${file:PATH}` references; errors name the reference only."""
    env = os.environ if environ is None else environ

    def sub(match: re.Match[str]) -> str:
        source, ref = match.group(1), match.group(2).strip()
        if source == "env":
            if ref not in env:
                raise VaultError(f"environment variable {ref} is not set")
            return env[ref]
        path = Path(ref).expanduser()
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise VaultError(f"cannot read secret file {ref}: {exc.strerror}") from None

    return Secret(REF.sub(sub, value))


def has_reference(value: str) -> bool:
    return bool(REF.search(value))


def mask_salt() -> bytes:
    """The salt of the `hash` masking strategy: stable per deployment, derived from the key."""
    import hashlib
    import hmac

    return hmac.new(load_key(), b"airlock mask salt v1", hashlib.sha256).digest()
