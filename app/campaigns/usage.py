"""What a grant was really used for: the evidence shown to reviewers.

One definition everywhere (campaign items, the portal's "last used", the dashboard's
"unused grants"): an operation counts when it ran under the grant, that is

- in a session of that service account on that connection,
- started no earlier than the grant itself (activity under an earlier grant, or before
  any grant, is not this grant's use),
- and actually let through: a PostgreSQL statement the relay ran (its `output` event),
  an operation of any other protocol whose `decision` event says `allow`.

Denied attempts are counted apart, as denials; held operations as reviews.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Grant, RecordedSession, Review, SessionEvent

WINDOW_DAYS = 90
READ_KINDS = frozenset({"read", "tcl"})  # what "only reads" allows: reading, and transaction control

# The command tag PostgreSQL answered with says what the statement did.
_TAG_KIND = {
    "SELECT": "read", "SHOW": "read", "FETCH": "read", "MOVE": "read", "EXPLAIN": "read", "DECLARE": "read",
    "CLOSE": "read", "VALUES": "read", "TABLE": "read",
    "INSERT": "write", "UPDATE": "write", "DELETE": "write", "MERGE": "write", "COPY": "write",
    "CREATE": "ddl", "ALTER": "ddl", "DROP": "ddl", "TRUNCATE": "ddl", "COMMENT": "ddl", "SECURITY": "ddl",
    "GRANT": "dcl", "REVOKE": "dcl",
    "BEGIN": "tcl", "START": "tcl", "COMMIT": "tcl", "END": "tcl", "ROLLBACK": "tcl", "SAVEPOINT": "tcl",
    "RELEASE": "tcl", "SET": "tcl", "RESET": "tcl", "DISCARD": "tcl", "PREPARE": "tcl", "DEALLOCATE": "tcl",
    "CALL": "exec", "DO": "exec",
}
_TAG_RE = re.compile(r'"tag":\s*"([A-Za-z]+)')
_WORD_RE = re.compile(r"[A-Za-z]+")


@dataclass
class Usage:
    since: datetime
    last_used: datetime | None = None
    sessions: int = 0
    ops: dict[str, int] = field(default_factory=dict)  # read, write, ddl, ..., and HTTP methods
    denials: int = 0
    reviews: dict[str, int] = field(default_factory=dict)  # held, approved, rejected, expired, pending
    _used_in: set[str] = field(default_factory=set, repr=False)  # sessions with an operation that ran

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "window_days": WINDOW_DAYS,
                "last_used": self.last_used.isoformat() if self.last_used else None,
                "sessions": self.sessions, "ops": dict(sorted(self.ops.items())), "denials": self.denials,
                "reviews": dict(sorted(self.reviews.items()))}

    def summary(self) -> str:
        """One line for a DM or a CSV cell: '412 read, 3 write; 2 sessions; 0 denials; 1 review'."""
        ops = ", ".join(f"{n} {k}" for k, n in sorted(self.ops.items(), key=lambda kv: -kv[1])) or "no operations"
        held = self.reviews.get("held", 0)
        return (f"{ops}; {self.sessions} session{'s' * (self.sessions != 1)}; {self.denials} "
                f"denial{'s' * (self.denials != 1)}; {held} review{'s' * (held != 1)} in {WINDOW_DAYS} days")


def event_effect(protocol: str, kind: str, data: str) -> tuple[str, str] | None:
    """("op", what) for an operation that ran, ("denied", "") for a refusal, else None. Pure."""
    if protocol == "postgres":
        if kind == "output":
            if not data.startswith('{"sql"') or '"not_run":true' in data:
                return None
            m = _TAG_RE.search(data)
            word = m.group(1) if m else _first_word(data)
            return "op", _TAG_KIND.get(word.upper(), "other")
        if kind == "decision" and '"deny"' in data:
            return ("denied", "") if json.loads(data).get("action") == "deny" else None
        return None
    if kind != "decision":
        return None
    event = json.loads(data)
    action = event.get("action")
    if action == "deny":
        return "denied", ""
    if action != "allow":
        return None
    if protocol == "http":
        return "op", (str(event.get("operation") or "").split(" ", 1)[0].upper() or "HTTP")
    return "op", str(event.get("kind") or "other")


def _first_word(data: str) -> str:
    try:
        sql = json.loads(data).get("sql") or ""
    except ValueError:
        return ""
    m = _WORD_RE.search(sql)
    return m.group(0) if m else ""


def counted_since(grant: Grant, now: datetime) -> datetime:
    return max(now - timedelta(days=WINDOW_DAYS), grant.created_at)


def _sessions(s: Session, sa: str, conn: str, since: datetime, until: datetime, newest_first: bool = False):
    order = RecordedSession.started_at.desc() if newest_first else RecordedSession.started_at
    # ix_sessions_sa_conn_started answers this range.
    return s.execute(select(RecordedSession.id, RecordedSession.protocol, RecordedSession.started_at)
                     .where(RecordedSession.service_account == sa, RecordedSession.connection == conn,
                            RecordedSession.started_at >= since, RecordedSession.started_at <= until)
                     .order_by(order))


def grant_usage(s: Session, grant: Grant, now: datetime) -> Usage:
    return usage_for(s, [grant], now)[grant.id]


BULK_AT = 200  # grants: from here on one pass over the window beats a probe per grant


def usage_for(s: Session, grants: Iterable[Grant], now: datetime) -> dict[int, Usage]:
    """Usage of each grant over the last WINDOW_DAYS (since it existed, if later).

    Few grants: index probes per grant, (service_account, connection, started_at). Many
    (a campaign over everything): one range scan of the window on ix_sessions_started,
    its events by (session_id, seq). Both read the same rows the same way.
    """
    grants = list(grants)
    out = {g.id: Usage(since=counted_since(g, now)) for g in grants}
    if len(grants) >= BULK_AT:
        _fill_bulk(s, grants, out, now)
        return out
    for g in grants:
        u, key = out[g.id], (g.service_account.name, g.connection.name)
        sessions = {sid: (proto, started) for sid, proto, started in _sessions(s, *key, u.since, now)}
        for chunk in _chunks(list(sessions), 500):
            rows = s.execute(select(SessionEvent.session_id, SessionEvent.kind, SessionEvent.t, SessionEvent.data)
                             .where(SessionEvent.session_id.in_(chunk), SessionEvent.kind.in_(_KINDS)))
            for sid, kind, t, data in rows:
                _count(u, sid, *sessions[sid], kind, t, data)
        reviews = s.execute(select(Review.status, func.count()).where(
            Review.service_account == key[0], Review.connection == key[1], Review.created_at >= u.since,
            Review.created_at <= now).group_by(Review.status)).all()
        for status, n in reviews:
            u.reviews[status] = n
    _finish(out.values())
    return out


_KINDS = ("output", "decision")


def _count(u: Usage, sid: str, proto: str, started: datetime, kind: str, t: float, data: str) -> None:
    effect = event_effect(proto, kind, data)
    if effect is None:
        return
    if effect[0] == "denied":
        u.denials += 1
        return
    u.ops[effect[1]] = u.ops.get(effect[1], 0) + 1
    u._used_in.add(sid)
    at = started + timedelta(seconds=t)
    if u.last_used is None or at > u.last_used:
        u.last_used = at


def _finish(usages: Iterable[Usage]) -> None:
    for u in usages:
        u.sessions = len(u._used_in)
        if u.reviews:
            u.reviews["held"] = sum(u.reviews.values())


def _fill_bulk(s: Session, grants: list[Grant], out: dict[int, Usage], now: datetime) -> None:
    start = now - timedelta(days=WINDOW_DAYS)
    by_key = {(g.service_account.name, g.connection.name): out[g.id] for g in grants}
    sessions: dict[str, tuple[Usage, str, datetime]] = {}
    for sid, proto, started, sa, conn in s.execute(
            select(RecordedSession.id, RecordedSession.protocol, RecordedSession.started_at,
                   RecordedSession.service_account, RecordedSession.connection)
            .where(RecordedSession.started_at >= start, RecordedSession.started_at <= now)):
        u = by_key.get((sa, conn))
        if u is not None and started >= u.since:
            sessions[sid] = (u, proto, started)
    if sessions:
        # Core rows, streamed: a million events cost one pass, with the relay's own
        # statement events (most of them) classified inline.
        conn = s.connection()
        rows = conn.execution_options(stream_results=True, yield_per=20000).execute(
            select(SessionEvent.session_id, SessionEvent.kind, SessionEvent.t, SessionEvent.data)
            .join(RecordedSession, RecordedSession.id == SessionEvent.session_id)
            .where(RecordedSession.started_at >= start, RecordedSession.started_at <= now,
                   SessionEvent.kind.in_(_KINDS)))
        tag_search, kinds = _TAG_RE.search, _TAG_KIND
        for sid, kind, t, data in rows:
            hit = sessions.get(sid)
            if hit is None:
                continue
            u, proto, started = hit
            if kind == "output" and proto == "postgres":
                if not data.startswith('{"sql"') or '"not_run":true' in data:
                    continue
                m = tag_search(data)
                what = kinds.get((m.group(1) if m else _first_word(data)).upper(), "other")
                u.ops[what] = u.ops.get(what, 0) + 1
                u._used_in.add(sid)
                if u.last_used is None or started + timedelta(seconds=t) > u.last_used:
                    u.last_used = started + timedelta(seconds=t)
            else:
                _count(u, sid, proto, started, kind, t, data)
    for sa, conn, status, created in s.execute(
            select(Review.service_account, Review.connection, Review.status, Review.created_at)
            .where(Review.created_at >= start, Review.created_at <= now)):
        u = by_key.get((sa, conn))
        if u is not None and created >= u.since:
            u.reviews[status] = u.reviews.get(status, 0) + 1
    _finish(out.values())


def last_used(s: Session, grant: Grant, now: datetime | None = None) -> datetime | None:
    """When an operation last ran under this grant (None: never). Newest sessions first,
    stopping at the first with an operation that ran: usually one session's events."""
    from app.models import utcnow

    now = now or utcnow()
    sa, conn = grant.service_account.name, grant.connection.name
    for sid, proto, started in _sessions(s, sa, conn, grant.created_at, now, newest_first=True).all():
        rows = s.execute(select(SessionEvent.kind, SessionEvent.t, SessionEvent.data)
                         .where(SessionEvent.session_id == sid, SessionEvent.kind.in_(("output", "decision")))
                         .order_by(SessionEvent.seq.desc()))
        for kind, t, data in rows:
            effect = event_effect(proto, kind, data)
            if effect is not None and effect[0] == "op":
                return started + timedelta(seconds=t)
    return None


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]
