"""Verify OIDC JWTs from per-service-account issuers and map them to a service account.

The unverified header and payload are read for two things only: which issuer's keys
to use (the issuer must be configured on an enabled service account) and which
`kid`. Everything that grants access is taken from the verified token.
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jws import JWSRegistry
from sqlalchemy import select

from app.config import settings
from app.db import session_scope
from app.identity.errors import AuthError
from app.identity.jwks import JWKSCache, UnknownKeyId
from app.models import ServiceAccount
from app.types import Principal

# Asymmetric only: an HS* token verified with a public key as the HMAC secret is the
# classic forgery, and "none" is no signature at all.
ALLOWED_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384",
    "EdDSA", "Ed25519",
)  # fmt: skip
MAX_LEEWAY = 30
MAX_TOKEN_CHARS = 16 * 1024
# Claims that may name the service account, in order of precedence.
SUBJECT_CLAIMS = ("sub", "client_id", "azp")


class OIDCVerifier:
    def __init__(
        self,
        jwks: JWKSCache | None = None,
        *,
        leeway: int | None = None,
        audience: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if leeway is None:
            leeway = int(settings().oidc_leeway_seconds)
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY} seconds")
        self.jwks = jwks or JWKSCache()
        self.leeway = leeway
        self._audience = audience
        self._clock = clock
        # Lenient on unknown header names (real IdPs add their own); `crit` still
        # makes joserfc refuse a header it must understand and does not.
        self._registry = JWSRegistry(algorithms=ALLOWED_ALGORITHMS, strict_check_header=False)

    @property
    def audience(self) -> str:
        return self._audience or settings().oidc_audience

    def verify(self, token: str) -> Principal:
        """A Principal for a valid token; AuthError otherwise (IdPError if the IdP fails)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("malformed token")
        header, unverified = _peek(token)
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError("token signing algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise AuthError("token has no issuer")
        accounts = _accounts_of(issuer)
        if not any(not sa.disabled for sa in accounts):
            raise AuthError("token issuer is not trusted")

        try:
            keys = self.jwks.keys_for(issuer, kid)
        except UnknownKeyId:
            raise AuthError("unknown token signing key") from None
        claims = self._decode(token, keys)
        self._validate(claims, issuer)
        sa, subject = _match(accounts, claims)
        if sa.disabled:
            raise AuthError("service account disabled")
        return Principal(
            service_account=sa.name,
            groups=sa.groups | _claim_groups(claims, sa.groups_claim),
            via="oidc",
            subject=subject,
            expires_at=float(claims["exp"]) + self.leeway,
        )

    def _decode(self, token: str, keys: Any) -> dict[str, Any]:
        try:
            return jwt.decode(token, keys, registry=self._registry).claims
        except BadSignatureError:
            raise AuthError("invalid token signature") from None
        except UnsupportedAlgorithmError:
            raise AuthError("token signing algorithm not allowed") from None
        except InvalidKeyIdError:
            raise AuthError("unknown token signing key") from None
        except (JoseError, ValueError, TypeError):
            raise AuthError("malformed token") from None

    def _validate(self, claims: dict[str, Any], issuer: str) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=self.leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise AuthError("token expired") from None
        except MissingClaimError as exc:
            missing = set(exc.claim.split(",")) if getattr(exc, "claim", None) else set()
            if "exp" in missing:
                raise AuthError("token has no expiry") from None
            if "aud" in missing:
                raise AuthError("token audience mismatch") from None
            raise AuthError("token is missing required claims") from None
        except InvalidClaimError as exc:
            claim = getattr(exc, "claim", "")
            raise AuthError(_CLAIM_REASONS.get(claim, "token claims invalid")) from None
        except JoseError:
            raise AuthError("token claims invalid") from None


_CLAIM_REASONS = {
    "aud": "token audience mismatch",
    "iss": "token issuer mismatch",
    "nbf": "token not yet valid",
    "iat": "token issued in the future",
    "exp": "token expiry invalid",
}


@dataclass(frozen=True, slots=True)
class _Account:
    name: str
    subject: str | None
    disabled: bool
    groups: frozenset[str]
    groups_claim: str | None


def _accounts_of(issuer: str) -> list[_Account]:
    # A short transaction of its own, closed before any IdP call: a slow IdP must
    # not hold pooled store connections open.
    with session_scope() as session:
        rows = session.scalars(select(ServiceAccount).where(ServiceAccount.oidc_issuer == issuer))
        return [
            _Account(sa.name, sa.oidc_subject, sa.disabled, frozenset(sa.group_names), sa.groups_claim)
            for sa in rows
        ]


def _b64json(segment: str) -> Any:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw)


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("malformed token")
    try:
        header, payload = _b64json(parts[0]), _b64json(parts[1])
    except ValueError:
        raise AuthError("malformed token") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise AuthError("malformed token")
    return header, payload


def _match(accounts: list[_Account], claims: dict[str, Any]) -> tuple[_Account, str]:
    for name in SUBJECT_CLAIMS:
        value = claims.get(name)
        if not isinstance(value, str) or not value:
            continue
        matches = [sa for sa in accounts if sa.subject == value]
        if len(matches) > 1:
            # Two accounts claiming one identity is a policy mistake; guessing
            # between them could hand out the wrong grants.
            raise AuthError("token matches more than one service account")
        if matches:
            return matches[0], value
    raise AuthError("no service account for this token subject")


def _claim_groups(claims: dict[str, Any], claim: str | None) -> frozenset[str]:
    if not claim:
        return frozenset()
    value = claims.get(claim)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    return frozenset()
