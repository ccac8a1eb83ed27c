"""Turn store rows into what the pages and the API show (plain data; templates escape it)."""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from urllib.parse import parse_qsl
from typing import Any

from app.approvals import review_url
from app.binding import window_note
from app.models import Review, utcnow
from app.portal.filters import iso
from app.risk import risk, risk_why

log = logging.getLogger(__name__)
SQL_PROTOCOLS = ("postgres", "mysql")
PRETTY_LIMIT = 20_000  # longer statements are shown as sent: pretty-printing them costs too much


_LOCKING = re.compile(r"\s*\bFOR((?:\s+NO\s+KEY)?)\s*\n\s*(UPDATE|SHARE)\b", re.IGNORECASE)


def _tokens(text: str) -> list[tuple[object, str]]:
    from sqlparse import lexer, tokens

    return [(t, v) for t, v in lexer.tokenize(text) if t not in tokens.Whitespace and t not in tokens.Newline]


def pretty_sql(text: str, protocol: str = "postgres") -> str:
    """A readable layout of a statement that changes whitespace between tokens only.

    A reviewer approves what they read, so a formatter that rewrote `now()` as
    CURRENT_TIMESTAMP, or a space inside a string literal, would be lying: the layout
    must lex to the very same tokens, else the statement is shown exactly as sent.
    """
    if not text or len(text) > PRETTY_LIMIT:
        return text
    try:
        import sqlparse

        pretty = sqlparse.format(text, reindent=True, indent_width=2).strip()
        # sqlparse breaks a locking clause over two lines; `FOR UPDATE` is one clause.
        pretty = _LOCKING.sub(lambda m: f"\n{m.group(0).split()[0]}{m.group(1)} {m.group(2)}", pretty)
        same = bool(pretty) and _tokens(pretty) == _tokens(text)
    except Exception:  # any formatter failure: show the statement as it came
        return text
    return pretty if same else text


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
    hold_until = _when(details.get("hold_until"))
    held_at = _when(details.get("held_at"))
    gone = review.requester_gone_at
    waiting = (status == "pending" and hold_until is not None and hold_until > now
               and not (gone is not None and (held_at is None or _aware(gone) >= held_at)))
    out["agent_waiting"] = waiting
    out["hold_until"] = iso(hold_until) if waiting else ""
    out["hold_seconds_left"] = int((hold_until - now).total_seconds()) if waiting else 0
    out["justification"] = details.get("justification") or ""
    if full:
        out["headers"] = [tuple(h) for h in details.get("headers") or []]
        out["body_text"] = details.get("body_text") or ""
        out["http_url"], out["query"] = split_query(review.operation) if review.protocol == "http" else ("", [])
        out["risk_why"] = risk_why(review.kind, details.get("attributes"), review.protocol)
        out["pretty"] = pretty_sql(review.operation, review.protocol) if review.protocol in SQL_PROTOCOLS else ""
        out["valid_until"] = iso(review.valid_until)
        out["consumed_at"] = iso(review.consumed_at)
        out["expires_after_seconds"] = details.get("expires_after_seconds")
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


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _when(value: str | None) -> datetime | None:
    try:
        return _aware(datetime.fromisoformat(value)) if value else None
    except ValueError:
        return None


def split_query(operation: str) -> tuple[str, list[tuple[str, str]]]:
    """'POST https://h/p?a=1&b=2' -> ('https://h/p', [('a', '1'), ('b', '2')]) for display."""
    _, rest = split_http(operation)
    url, _, query = rest.partition("?")
    return url, parse_qsl(query, keep_blank_values=True) if query else []
