"""Slack request signatures, checked on the raw body; refusals are audited.

slack-sdk's SignatureVerifier does the check (HMAC-SHA256 over `v0:timestamp:body`,
timestamp within 5 minutes). We only add *why* it failed, for the audit entry.

Audit entries are rate-limited per process: an unauthenticated caller must not be able
to grow the audit chain (and hold its lock) at line rate. Refusals beyond the limit are
counted and reported in the next entry that is written.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Mapping

from slack_sdk.signature import SignatureVerifier

from app import audit
from app.db import session_scope

log = logging.getLogger(__name__)

MAX_AGE = 300  # seconds, as Slack recommends and SignatureVerifier enforces
AUDIT_BURST = 20
AUDIT_WINDOW = 60.0

_lock = threading.Lock()
_window = {"start": 0.0, "count": 0, "suppressed": 0}


def check(secret: str, body: bytes, headers: Mapping[str, str]) -> str | None:
    """None if the request is Slack's; else why not (for the audit log)."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not timestamp or not signature:
        return "missing signature headers"
    try:
        age = time.time() - int(timestamp)
    except ValueError:
        return "malformed timestamp"
    verifier = SignatureVerifier(secret)
    if verifier.is_valid_request(body, {"x-slack-request-timestamp": timestamp, "x-slack-signature": signature}):
        return None
    if abs(age) > MAX_AGE:
        return f"timestamp outside 5 minutes ({int(age)} s old)"
    return "bad signature"


def audit_refusal(reason: str, *, path: str, remote: str | None, timestamp: str | None) -> bool:
    """Record a refused request; False if the rate limit suppressed it."""
    now = time.monotonic()
    with _lock:
        if now - _window["start"] > AUDIT_WINDOW:
            _window["start"], _window["count"] = now, 0
        if _window["count"] >= AUDIT_BURST:
            _window["suppressed"] += 1
            log.warning("slack request refused (%s) from %s; audit entry suppressed by rate limit", reason, remote)
            return False
        _window["count"] += 1
        suppressed, _window["suppressed"] = _window["suppressed"], 0
    try:
        with session_scope() as s:
            audit.append(s, f"remote:{remote or '?'}", "slack.request_refused", path, {
                "reason": reason, "remote_addr": remote, "timestamp": (timestamp or "")[:20],
                "suppressed_since_last": suppressed,
            })
    except Exception:  # the 401 stands whether or not the store took the entry
        log.exception("could not audit a refused Slack request")
        return False
    return True


def reset_rate_limit() -> None:
    with _lock:
        _window.update(start=0.0, count=0, suppressed=0)
