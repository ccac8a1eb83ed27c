"""The one entry point adapters call: credential (+ claimed user) -> Principal.

Fail closed: every outcome other than a verified identity is an AuthError, including
a store or IdP that is down and any bug underneath.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import joinedload

from app.bounded import BoundedCache
from app.db import StoreUnavailable, session_scope
from app.identity.errors import AuthError, IdentityUnavailable, IdPError
from app.identity.oidc import OIDCVerifier
from app.identity.jwks import JWKSCache
from app.identity.tokens import TOKEN_PREFIX, hash_token, looks_like_token
from app.models import Token
from app.types import Principal

log = logging.getLogger(__name__)

MAX_CREDENTIAL_CHARS = 16 * 1024


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    token_id: int
    version: int
    valid_until: float  # never later than the token's expiry


class Authenticator:
    """Resolve credentials to service accounts.

    `version_source` returns the store's "policy" version (app.versions); cached
    minted-token lookups are keyed by it, so a revocation or an issue anywhere is
    seen on the next call. Without one, nothing is cached. `clock` returns epoch
    seconds; tests pass a fake one and it then drives every cache and expiry check.
    """

    def __init__(
        self,
        version_source: Callable[[], int] | None = None,
        clock: Callable[[], float] | None = None,
        *,
        oidc: OIDCVerifier | None = None,
        leeway: int | None = None,
        cache_ttl: float = 30.0,
        cache_size: int = 10_000,
        touch_interval: float = 60.0,
    ):
        self._version_source = version_source
        self._clock = clock or time.time
        self.oidc = oidc or OIDCVerifier(
            JWKSCache(clock=clock or time.time), leeway=leeway, clock=self._clock
        )
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.touch_interval = touch_interval
        self._cache: BoundedCache[str, _Cached] = BoundedCache(cache_size)
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    # -- public -----------------------------------------------------------------

    def authenticate(self, credential: str, claimed: str | None = None) -> Principal:
        try:
            principal = self._authenticate(credential)
            if claimed is not None and claimed != principal.service_account:
                raise AuthError("user name does not match the credential")
            return principal
        except AuthError:
            raise
        except IdPError as exc:
            raise IdentityUnavailable(exc.reason) from None
        except (SQLAlchemyError, StoreUnavailable) as exc:
            log.warning("authentication: store unavailable: %s", type(exc).__name__)
            raise IdentityUnavailable("store unavailable") from None
        except Exception:
            # The credential is not in the message; the traceback holds no locals.
            log.exception("authentication failed unexpectedly")
            raise AuthError("authentication failed") from None

    async def authenticate_async(self, credential: str, claimed: str | None = None) -> Principal:
        """The same, off the event loop: store and IdP calls block."""
        return await asyncio.to_thread(self.authenticate, credential, claimed)

    # -- dispatch ---------------------------------------------------------------

    def _authenticate(self, credential: str) -> Principal:
        if not isinstance(credential, str) or not credential or len(credential) > MAX_CREDENTIAL_CHARS:
            raise AuthError("unrecognised credential")
        if credential.startswith(TOKEN_PREFIX):
            return self._minted(credential)
        if credential.count(".") == 2:
            return self.oidc.verify(credential)
        raise AuthError("unrecognised credential")

    # -- minted tokens ----------------------------------------------------------

    def _minted(self, token: str) -> Principal:
        if not looks_like_token(token):
            raise AuthError("unknown token")
        digest = hash_token(token)
        # Read the version before the store: a bump that lands in between makes
        # the entry we write stale at once, never the other way round.
        version = self._version_source() if self._version_source else None
        now = self._clock()
        if version is not None:
            hit = self._cache_get(digest, version, now)
            if hit is not None:
                if self._touch_due(hit.token_id, None, now):
                    self._touch_detached(hit.token_id, now)
                return hit.principal

        with session_scope() as session:
            row = session.scalar(
                select(Token).where(Token.token_hash == digest).options(joinedload(Token.service_account))
            )
            if row is None:
                raise AuthError("unknown token")
            if row.revoked_at is not None:
                raise AuthError("token revoked")
            expires = row.expires_at.timestamp()
            if expires <= now:
                raise AuthError("token expired")
            sa = row.service_account
            if sa.disabled:
                raise AuthError("service account disabled")
            principal = Principal(
                service_account=sa.name,
                groups=frozenset(sa.group_names),
                via="token",
                subject=f"token:{row.id}",
                expires_at=expires,
            )
            last = row.last_used_at.timestamp() if row.last_used_at else None
            if self._touch_due(row.id, last, now):
                row.last_used_at = _dt(now)

        if version is not None:
            self._cache_put(digest, _Cached(principal, row.id, version, min(now + self.cache_ttl, expires)))
        return principal

    def _cache_get(self, digest: str, version: int, now: float) -> _Cached | None:
        with self._lock:
            hit = self._cache.get(digest)
            if hit is None:
                return None
            if hit.version != version or hit.valid_until <= now:
                del self._cache[digest]
                return None
            self._cache.touch(digest)
            return hit

    def _cache_put(self, digest: str, entry: _Cached) -> None:
        with self._lock:
            self._cache.put(digest, entry)

    # -- last_used_at -------------------------------------------------------------

    def _touch_due(self, token_id: int, stored: float | None, now: float) -> bool:
        """At most one last_used_at write per token per interval (per process; the
        stored value also stops other processes' writes on the uncached path)."""
        with self._lock:
            last = self._touched.get(token_id, stored)
            if stored is not None and last is not None:
                last = max(last, stored)
            if last is not None and now - last < self.touch_interval:
                return False
            if len(self._touched) >= self.cache_size:
                cutoff = now - self.touch_interval
                self._touched = {k: v for k, v in self._touched.items() if v > cutoff}
            self._touched[token_id] = now
            return True

    def _touch_detached(self, token_id: int, now: float) -> None:
        # Bookkeeping only: the credential was already verified against the current
        # version, so a failed write must not turn into a refusal.
        try:
            with session_scope() as session:
                session.execute(update(Token).where(Token.id == token_id).values(last_used_at=_dt(now)))
        except Exception as exc:
            log.warning("could not record token use: %s", type(exc).__name__)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)
