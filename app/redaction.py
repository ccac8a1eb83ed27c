"""Secret scrubbing: what must never be stored or shown (pure, no I/O).

Used wherever operation text, headers, bodies or audit data leave the hot path: the
audit chain, reviews, recordings, and what the HTTP adapter shows approvers. Keys that
name a secret are redacted whole; free text is searched for credentials that hide
under innocent keys (an SQL statement, a header dump).
"""
from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"

_SECRET_KEY_PARTS = (
    "password", "passwd", "passphrase", "token", "secret", "private_key", "privatekey",
    "authorization", "cookie", "api_key", "apikey", "credential",
)
# Secrets that hide in free text under innocent keys (an SQL statement, a header dump).
_SECRET_VALUE_PATTERNS = (
    # A credential has some non-letter in it; this spares prose such as "basic checks".
    (re.compile(r"(?i)\b(bearer|basic)\s+(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"\balk_[A-Za-z0-9_-]{16,}"), "alk_" + REDACTED),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), REDACTED),
    (re.compile(r"(?i)\b(password|identified\s+by)(\s+)'(?:[^']|'')*'"), r"\1\2'" + REDACTED + "'"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@"), r"\1:" + REDACTED + "@"),
)


# Facts *about* a secret (which token, when it expires) are what an auditor needs.
_SAFE_KEY_SUFFIXES = ("_id", "_ids", "_prefix", "_count", "_at", "_ttl", "_type", "_name", "_expires")


def _is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(part in k for part in _SECRET_KEY_PARTS) and not k.endswith(_SAFE_KEY_SUFFIXES)


def _scrub_text(value: str) -> str:
    for pattern, repl in _SECRET_VALUE_PATTERNS:
        value = pattern.sub(repl, value)
    return value


def scrub(data: Any) -> Any:
    """A copy of `data` with secret-looking keys and values redacted, at any depth."""
    if isinstance(data, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _is_secret_key(k) and v not in (None, "") else scrub(v))
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple, set, frozenset)):
        return [scrub(v) for v in data]
    if isinstance(data, str):
        return _scrub_text(data)
    return data
