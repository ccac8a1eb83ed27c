"""List queries shared by the pages and the API: filters, keyset pagination, indexes.

Lists page with a cursor (the last row's sort key), never OFFSET: page 200 of the audit
log costs what page 1 does. Every filter here has an index behind it (models +
migration 0002).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from sqlalchemy import and_, exists, func, or_, select

from app.models import AuditEntry, RecordedSession, SessionEvent

PAGE = 50
MAX_INT = 2**31 - 1  # ids and sequence numbers are INTEGER columns
MAX_PAGE = 50
MAX_INT = 2**31 - 1  # ids and sequence numbers are INTEGER columns0
PROTOCOLS = ("http", "postgres", "mysql", "ssh")
VERDICTS = {
    # Decision events are JSON written by the gate; their text is searched inside one
    # session's events only (the session_id index), never across the whole table.
    "denied": ('%"action": "deny"%', '%"action":"deny"%'),
    "held": ('%"review_id"%',),
    # An answer (output event) in which values were actually masked: adapters write
    # "masked": N only then. A decision's mask rules ("masks") may have found nothing.
    "masked": ('%"masked":%',),
    "error": ('%"status": "error"%', '%"status":"error"%'),
}


VERDICT_KINDS = {"masked": "output"}  # the event kind each verdict is read from (else decision)


class BadFilter(ValueError):
    """A filter value that cannot be used; the message is safe to show."""


def clean(value: Any, limit: int = 500) -> str:
    text = str(value or "").strip()
    if "\x00" in text or not encodable(text):
        raise BadFilter("text may not contain NUL characters or lone surrogates")
    return text[:limit]


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800" escape: no store takes it
        return False
    return True


def parse_time(value: str | None, *, end: bool = False) -> datetime | None:
    """'2026-11-27', '2026-11-27T10:00' or a full ISO time (UTC unless it says otherwise)."""
    text = clean(value, 64)
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(f"{text!r} is not a date or time (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    if end and len(text) == 10:
        ts += timedelta(days=1)  # a day given as the end includes the whole day
    if not datetime(1970, 1, 2, tzinfo=timezone.utc) <= ts <= datetime(9999, 1, 1, tzinfo=timezone.utc):
        raise BadFilter(f"{text!r} is out of range")
    return ts


def page_size(value: Any, default: int = PAGE) -> int:
    try:
        n = int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise BadFilter("limit must be a number") from None
    if not 1 <= n <= MAX_PAGE:
        raise BadFilter(f"limit must be between 1 and {MAX_PAGE}")
    return n


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


# -- sessions ---------------------------------------------------------------------------

def session_filters(args: Mapping[str, Any]) -> dict[str, Any]:
    f = {
        "service_account": clean(args.get("service_account"), 200),
        "connection": clean(args.get("connection"), 200),
        "protocol": clean(args.get("protocol"), 20),
        "run_id": clean(args.get("run_id"), 200),
        "verdict": clean(args.get("verdict"), 20),
        "since": parse_time(args.get("since")),
        "until": parse_time(args.get("until"), end=True),
    }
    if f["protocol"] and f["protocol"] not in PROTOCOLS:
        raise BadFilter(f"protocol must be one of {', '.join(PROTOCOLS)}")
    if f["verdict"] and f["verdict"] not in VERDICTS:
        raise BadFilter(f"verdict must be one of {', '.join(VERDICTS)}")
    return f


def _session_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    ts, _, sid = clean(cursor, 120).partition("|")
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        raise BadFilter("bad cursor") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when, sid


def list_sessions(s, f: dict[str, Any], *, limit: int = PAGE, cursor: str | None = None) -> Page:
    S = RecordedSession
    stmt = select(S)
    for key in ("service_account", "connection", "protocol", "run_id"):
        if f.get(key):
            stmt = stmt.where(getattr(S, key) == f[key])
    if f.get("since"):
        stmt = stmt.where(S.started_at >= f["since"])
    if f.get("until"):
        stmt = stmt.where(S.started_at < f["until"])
    if f.get("verdict"):
        patterns = VERDICTS[f["verdict"]]
        E = SessionEvent
        stmt = stmt.where(exists().where(E.session_id == S.id, E.kind == VERDICT_KINDS.get(f["verdict"], "decision"),
                                         or_(*[E.data.like(p) for p in patterns])))
    after = _session_cursor(cursor)
    if after:
        stmt = stmt.where(or_(S.started_at < after[0], and_(S.started_at == after[0], S.id < after[1])))
    rows = s.scalars(stmt.order_by(S.started_at.desc(), S.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    # UTC with a Z: no '+' that a query string would turn into a space.
    nxt = f"{rows[-1].started_at.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ}|{rows[-1].id}" if more and rows else None
    return Page(list(rows), nxt)


def session_dict(row: RecordedSession) -> dict[str, Any]:
    end = row.ended_at
    return {
        "id": row.id, "protocol": row.protocol, "service_account": row.service_account,
        "connection": row.connection, "run_id": row.run_id, "client_addr": row.client_addr,
        "started_at": row.started_at.isoformat(), "ended_at": end.isoformat() if end else None,
        "active": end is None, "event_count": row.event_count,
        "duration_seconds": (end - row.started_at).total_seconds() if end else None,
    }


# -- audit ------------------------------------------------------------------------------

def audit_filters(args: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "actor": clean(args.get("actor"), 320),
        "action": clean(args.get("action"), 100),
        "target": clean(args.get("target"), 500),
        "q": clean(args.get("q"), 200),
        "since": parse_time(args.get("since")),
        "until": parse_time(args.get("until"), end=True),
    }


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def audit_query(f: dict[str, Any]):
    A = AuditEntry
    stmt = select(A)
    if f.get("actor"):
        stmt = stmt.where(A.actor == f["actor"])
    if f.get("action"):
        action = f["action"]
        # "review" or "review." finds every review.* action; a full name matches exactly.
        if action.endswith(".") or "." not in action:
            prefix = action.rstrip(".") + "."
            stmt = stmt.where(or_(A.action == action.rstrip("."), A.action.like(_like_escape(prefix) + "%", escape="\\")))
        else:
            stmt = stmt.where(A.action == action)
    if f.get("target"):
        stmt = stmt.where(A.target == f["target"])
    if f.get("since"):
        stmt = stmt.where(A.ts >= f["since"])
    if f.get("until"):
        stmt = stmt.where(A.ts < f["until"])
    if f.get("q"):
        needle = "%" + _like_escape(f["q"].lower()) + "%"
        from sqlalchemy import String, cast

        stmt = stmt.where(or_(func.lower(A.target).like(needle, escape="\\"),
                              func.lower(A.actor).like(needle, escape="\\"),
                              func.lower(cast(A.data, String)).like(needle, escape="\\")))
    return stmt


def list_audit(s, f: dict[str, Any], *, limit: int = PAGE, before: int | None = None) -> Page:
    A = AuditEntry
    stmt = audit_query(f)
    if before is not None:
        stmt = stmt.where(A.seq < before)
    rows = s.scalars(stmt.order_by(A.seq.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(list(rows), str(rows[-1].seq) if more and rows else None)


def parse_seq(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadFilter("cursor must be a sequence number") from None
    if not 0 <= n <= MAX_INT:
        raise BadFilter("cursor out of range")
    return n
