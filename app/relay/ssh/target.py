"""The relay as an SSH client of the target: the vault's credential, the pinned host key."""
from __future__ import annotations

import asyncssh

from app.snapshot import Target

CONNECT_TIMEOUT = 15.0
# AES-GCM first: one OpenSSL AEAD call a packet, where asyncssh's chacha20-poly1305 takes
# several. The client's order wins the negotiation, so the relay's server side does not
# offer chacha20 at all (OpenSSH clients list it first); every cipher here is safe.
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr"]


class TargetError(Exception):
    """The target could not be reached as configured; the message is safe to show the runtime."""


def _address(target: Target) -> tuple[str, int]:
    host, sep, port = str(target.config.get("address") or "").rpartition(":")
    if not sep:
        return port, 22
    return host.strip("[]"), int(port)


async def connect(target: Target) -> asyncssh.SSHClientConnection:
    """Log in to the target. Its host key must be the one pinned in the connection
    (`host_key`): anything else is refused before a credential is sent."""
    host, port = _address(target)
    pinned = str(target.config.get("host_key") or "").strip()
    if not pinned:
        raise TargetError(f"connection {target.name!r} has no host_key pinned; airlock will not log in blind")
    try:
        trusted = asyncssh.import_public_key(pinned)
    except (asyncssh.KeyImportError, ValueError):
        raise TargetError(f"the host_key of connection {target.name!r} is not a valid OpenSSH public key") from None
    keys = []
    secret = target.secrets.get("private_key")
    if secret is not None:
        try:
            keys.append(asyncssh.import_private_key(secret.reveal()))
        except (asyncssh.KeyImportError, ValueError):
            raise TargetError(f"the private_key of connection {target.name!r} cannot be read") from None
    password = target.secrets.get("password")
    try:
        return await asyncssh.connect(
            host, port,
            username=str(target.config.get("username") or ""),
            client_keys=keys or None,
            password=password.reveal() if password is not None else None,
            known_hosts=([trusted], [], []),
            # Only the pinned key's algorithm: a target offering another key type first
            # must not be refused for a key it also has.
            server_host_key_algs=[trusted.get_algorithm()] + (["rsa-sha2-256", "rsa-sha2-512"]
                                                              if trusted.get_algorithm() == "ssh-rsa" else []),
            encryption_algs=CIPHERS, agent_path=None, agent_forwarding=False, config=None, ignore_encrypted=True,
            connect_timeout=CONNECT_TIMEOUT, kbdint_auth=False, gss_auth=False, host_based_auth=False,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise TargetError(f"the host key of {host}:{port} does not match the host_key pinned for connection "
                          f"{target.name!r}; airlock refused to connect (if the key changed on purpose, "
                          "update host_key in the policy)") from None
    except asyncssh.PermissionDenied:
        raise TargetError(f"the target {host}:{port} refused the credential of connection {target.name!r}") from None
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise TargetError(f"cannot reach the target of connection {target.name!r} ({type(exc).__name__})") from None
