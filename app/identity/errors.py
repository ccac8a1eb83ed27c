"""Errors of the identity layer."""
from __future__ import annotations


class AuthError(Exception):
    """A credential was refused. `reason` is short and safe to show the client:
    it never contains the credential itself."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class IdentityUnavailable(AuthError):
    """The credential could not be checked at all (store or identity provider down).

    Still a refusal; adapters may answer "unavailable" (503) instead of "bad credentials".
    """


class UnknownServiceAccount(LookupError):
    """No service account has that name."""


class IdPError(Exception):
    """The identity provider could not be used (down, bad answer, misconfigured)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
