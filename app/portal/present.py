"""Turn store rows into what the pages and the API show (plain data; templates escape it)."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from app.approvals import review_url
from app.binding import window_note
from app.models import Review, utcnow
from app.portal.filters import iso, risk

log = logging.getLogger(__name__)
SQL_PROTOCOLS = ("postgres", "mysql")
PRETTY_LIMIT = 20_000  # longer statements are shown as sent: pretty-printing them costs too much


def _squash(text: str) -> str:
    return "".join(text.split())


def pretty_sql(text: str, protocol: str = "postgres") -> str:
    """A readable layout of a statement that changes whitespace only, never a token.

    A reviewer approves what they read, so a formatter that rewrote `now()` as
    CURRENT_TIMESTAMP would be lying; anything but a pure re-indent falls back to the
    statement exactly as sent.
    """
    if not text or len(text) > PRETTY_LIMIT:
        return text
    try:
        import sqlparse

        pretty = sqlparse.format(text, reindent=True, indent_width=2).strip()
    except Exception:  # any formatter failure: show the statement as it came
        return text
    return pretty if pretty and _squash(pretty) == _squash(text) else text


def time_left(review: Review, now: datetime | None = None) -> float:
    return max(0.0, (review.expires_at - (now or utcnow())).total_seconds())


def review_view(review: Review, now: datetime | None = None, *, full: bool = False) -> dict[str, Any]:
    """A review for templates and the API."""
    now = now or utcnow()
    details = review.details or {}
    status = review.status
    if status == "pending" and review.expires_at <= now:
        status = "expired"
    approvals = [v for v in review.votes if v.decision == "approve"]
    out: dict[str, Any] = {
        "id": review.id,
        "status": status,
        "service_account": review.service_account,
        "run_id": review.run_id,
        "session_id": review.session_id,
        "connection": review.connection,
        "protocol": review.protocol,
        "kind": review.kind,
        "operation": review.operation,
        "fingerprint": review.fingerprint,
        "binding": review.binding,
        "shape": review.shape or "",
        "params": details.get("params"),
        "body": details.get("body"),
        "requester_gone_at": iso(review.requester_gone_at),
        "rule": review.rule,
        "message": review.message,
        "risk": risk(review.kind, details.get("attributes"), review.protocol),
        "approver_groups": list(review.groups or []),
        "required": review.required,
        "approvals": len({v.approver for v in approvals}),
        "votes": [
            {"approver": v.approver, "decision": v.decision, "reason": v.reason, "window_minutes": v.window_minutes,
             "via": v.via, "at": iso(v.created_at)}
            for v in review.votes
        ],
        "created_at": iso(review.created_at),
        "expires_at": iso(review.expires_at),
        "seconds_left": int(time_left(review, now)) if status == "pending" else 0,
        "decided_at": iso(review.decided_at),
        "decided_by": review.decided_by,
        "reason": review.reason,
        "url": review_url(review.id),
        "targets": list(details.get("targets") or []),
        "attributes": list(details.get("attributes") or []),
    }
    if full:
        out["pretty"] = pretty_sql(review.operation, review.protocol) if review.protocol in SQL_PROTOCOLS else ""
        out["window_minutes"] = details.get("window_minutes")
        out["hold_seconds"] = details.get("hold_seconds")
        out["window_note"] = window_note(review.protocol)
    return out


def split_http(operation: str) -> tuple[str, str]:
    """'GET host/path' -> ('GET', 'host/path'); anything else -> ('', text)."""
    method, _, rest = operation.partition(" ")
    if method.isupper() and method.isalpha() and len(method) <= 10 and rest:
        return method, rest
    return "", operation
