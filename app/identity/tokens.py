"""airlock-minted tokens (`alk_...`): issue, revoke, list.

Only the SHA-256 of a token is stored. The plaintext exists once, in the
`IssuedToken` handed back to whoever issued it.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.identity.errors import UnknownServiceAccount
from app.models import ServiceAccount, Token, utcnow
from app.versions import bump_version

TOKEN_PREFIX = "alk_"
MAX_TTL = timedelta(days=365)
# Enough to tell tokens apart in a listing while leaving ~200 bits secret.
DISPLAY_CHARS = 8
# token_urlsafe(32) gives 43 characters of the URL-safe alphabet.
_TOKEN_RE = re.compile(r"alk_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class IssuedToken:
    token: str = field(repr=False)  # keep the secret out of logs and tracebacks
    id: int
    expires_at: datetime
    prefix: str = ""


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: never its hash, never its value."""

    id: int
    service_account: str
    prefix: str
    description: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(credential: str) -> bool:
    """True when `credential` has the exact shape of a minted token."""
    return _TOKEN_RE.fullmatch(credential) is not None


def issue_token(
    session: Session,
    service_account: str,
    ttl: timedelta,
    created_by: str = "",
    description: str = "",
) -> IssuedToken:
    """Mint a token for `service_account`, valid for `ttl` (0 < ttl <= 365 days)."""
    if not isinstance(ttl, timedelta):
        raise TypeError(f"ttl must be a timedelta, got {type(ttl).__name__}")
    if ttl <= timedelta(0):
        raise ValueError("token ttl must be positive")
    if ttl > MAX_TTL:
        raise ValueError(f"token ttl must be at most {MAX_TTL.days} days")
    if len(description) > 300:
        raise ValueError("token description must be at most 300 characters")
    if len(created_by) > 320:
        raise ValueError("created_by must be at most 320 characters")
    sa = _service_account(session, service_account)
    if sa.disabled:
        raise ValueError(f"service account {service_account!r} is disabled")

    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    # The characters after "alk_"; listings show it as alk_<prefix>….
    prefix = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + DISPLAY_CHARS]
    expires_at = utcnow() + ttl
    row = Token(
        service_account_id=sa.id,
        token_hash=hash_token(token),
        prefix=prefix,
        description=description,
        created_by=created_by,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    bump_version(session)
    return IssuedToken(token=token, id=row.id, expires_at=expires_at, prefix=prefix)


def revoke_token(session: Session, token_id: int, by: str) -> TokenInfo:
    """Revoke a token at once. Revoking a revoked token is a no-op.

    `by` is accepted for the caller's audit entry; the tokens table has no column
    for it.
    """
    row = session.get(Token, token_id)
    if row is None:
        raise LookupError(f"no token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        bump_version(session)
    return _info(row, row.service_account.name)


def list_tokens(session: Session, service_account: str) -> list[TokenInfo]:
    sa = _service_account(session, service_account)
    rows = session.scalars(select(Token).where(Token.service_account_id == sa.id).order_by(Token.id))
    return [_info(row, sa.name) for row in rows]


def _service_account(session: Session, name: str) -> ServiceAccount:
    sa = session.scalar(select(ServiceAccount).where(ServiceAccount.name == name))
    if sa is None:
        raise UnknownServiceAccount(f"unknown service account {name!r}")
    return sa


def _info(row: Token, service_account: str) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        service_account=service_account,
        prefix=row.prefix,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
