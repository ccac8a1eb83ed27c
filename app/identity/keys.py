"""SSH public keys registered to service accounts (`public_keys` in the policy file)."""
from __future__ import annotations

from sqlalchemy import select

from app.db import session_scope
from app.identity.errors import AuthError
from app.models import ServiceAccount
from app.types import Principal


def key_id(openssh: str) -> str:
    """`TYPE BASE64` without the comment: what two equal keys share."""
    fields = openssh.split()
    return " ".join(fields[:2]) if len(fields) >= 2 else ""


def principal_for_public_key(openssh: str) -> Principal:
    wanted = key_id(openssh)
    if not wanted:
        raise AuthError("not an OpenSSH public key")
    with session_scope() as s:
        owners = [sa for sa in s.scalars(select(ServiceAccount))
                  if any(key_id(k) == wanted for k in (sa.public_keys or ()))]
        if len(owners) != 1:
            # Two accounts sharing one key cannot tell who is calling: refuse both.
            raise AuthError("unknown public key" if not owners else "public key registered to several accounts")
        sa = owners[0]
        if sa.disabled:
            raise AuthError("service account disabled")
        return Principal(service_account=sa.name, groups=frozenset(sa.group_names), via="token",
                         subject=f"ssh-key:{wanted.split()[0]}")
