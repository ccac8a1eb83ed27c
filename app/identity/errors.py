"""Errors of the identity layer."""
from __future__ import annotations


class AuthError(Exception):
    """A credential was refused. `reason` is short and safe to show the client:
    it never contains the credential itself."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnknownServiceAccount(LookupError):
    """No service account has that name."""


class IdPError(Exception):
    """The identity provider could not be used (down, bad answer, misconfigured)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
