"""Who is calling: airlock-minted tokens and OIDC JWTs, resolved to a Principal.

    auth = Authenticator(version_source=version_reader())
    principal = auth.authenticate(credential, claimed=user)   # or await authenticate_async
"""
from app.identity.authenticator import Authenticator
from app.identity.errors import AuthError, IdentityUnavailable, IdPError, UnknownServiceAccount
from app.identity.jwks import JWKSCache, check_url, is_loopback_host
from app.identity.oidc import ALLOWED_ALGORITHMS, MAX_LEEWAY, OIDCVerifier
from app.identity.tokens import (
    MAX_TTL,
    TOKEN_PREFIX,
    IssuedToken,
    TokenInfo,
    hash_token,
    issue_token,
    list_tokens,
    revoke_token,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "MAX_LEEWAY",
    "MAX_TTL",
    "TOKEN_PREFIX",
    "AuthError",
    "Authenticator",
    "IdPError",
    "IdentityUnavailable",
    "IssuedToken",
    "JWKSCache",
    "OIDCVerifier",
    "TokenInfo",
    "UnknownServiceAccount",
    "check_url",
    "hash_token",
    "is_loopback_host",
    "issue_token",
    "list_tokens",
    "revoke_token",
]
