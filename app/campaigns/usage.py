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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import Grant, RecordedSession, Review, SessionEvent, SessionUsage

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


@dataclass(frozen=True)
class GrantRef:
    """A grant as usage needs it: plain names, so thousands load without ORM objects."""

    id: int
    service_account: str
    connection: str
    created_at: datetime

    @classmethod
    def of(cls, grant: Grant) -> GrantRef:
        return cls(grant.id, grant.service_account.name, grant.connection.name, grant.created_at)


def counted_since(grant: GrantRef, now: datetime) -> datetime:
    return max(now - timedelta(days=WINDOW_DAYS), grant.created_at)


# -- one session: what ran in it ------------------------------------------------------------

@dataclass
class SessionSummary:
    ops: dict[str, int] = field(default_factory=dict)
    denials: int = 0
    last_op_at: datetime | None = None


_KINDS = ("output", "decision")
_SessionRow = tuple[str, datetime, datetime | None]  # protocol, started_at, ended_at


def _summarize_events(rows, sessions: dict[str, _SessionRow], out: dict[str, SessionSummary]) -> None:
    tag_search, kinds = _TAG_RE.search, _TAG_KIND
    for sid, kind, t, data in rows:
        proto, started, _ = sessions[sid]
        summary = out[sid]
        if kind == "output" and proto == "postgres":  # the relay's statements: most events, inline
            if not data.startswith('{"sql"') or '"not_run":true' in data:
                continue
            m = tag_search(data)
            effect = ("op", kinds.get((m.group(1) if m else _first_word(data)).upper(), "other"))
        else:
            effect = event_effect(proto, kind, data)
            if effect is None:
                continue
        if effect[0] == "denied":
            summary.denials += 1
            continue
        summary.ops[effect[1]] = summary.ops.get(effect[1], 0) + 1
        at = started + timedelta(seconds=t)
        if summary.last_op_at is None or at > summary.last_op_at:
            summary.last_op_at = at


def summaries(s: Session, sessions: dict[str, _SessionRow], *, keep: bool = True) -> dict[str, SessionSummary]:
    """Each session's summary: from session_usage when it ended and was summarised, else
    from its events (and kept, once the session has ended: its events are final then)."""
    out: dict[str, SessionSummary] = {}
    ids = list(sessions)
    for chunk in _chunks(ids, 900):
        for sid, ops, denials, last in s.execute(select(SessionUsage.session_id, SessionUsage.ops, SessionUsage.denials,
                                                        SessionUsage.last_op_at)
                                                 .where(SessionUsage.session_id.in_(chunk))):
            out[sid] = SessionSummary(dict(ops or {}), denials, last)
    missing = [sid for sid in ids if sid not in out]
    fresh: dict[str, SessionSummary] = {sid: SessionSummary() for sid in missing}
    for chunk in _chunks(missing, 900):
        # (session_id, seq) is unique: its index serves this lookup session by session.
        rows = s.connection().execute(select(SessionEvent.session_id, SessionEvent.kind, SessionEvent.t, SessionEvent.data)
                                      .where(SessionEvent.session_id.in_(chunk), SessionEvent.kind.in_(_KINDS)))
        _summarize_events(rows, sessions, fresh)
    out.update(fresh)
    ended = [sid for sid in missing if sessions[sid][2] is not None]
    if keep and ended:
        _keep(s, ended, fresh)
    return out


def _keep(s: Session, ids: list[str], fresh: dict[str, SessionSummary]) -> None:
    meta = {sid: (sa, conn, started) for sid, sa, conn, started in s.execute(
        select(RecordedSession.id, RecordedSession.service_account, RecordedSession.connection,
               RecordedSession.started_at).where(RecordedSession.id.in_(ids)))}
    rows = [{"session_id": sid, "service_account": meta[sid][0], "connection": meta[sid][1], "started_at": meta[sid][2],
             "ops": fresh[sid].ops, "denials": fresh[sid].denials, "last_op_at": fresh[sid].last_op_at}
            for sid in ids if sid in meta]
    if not rows:
        return
    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    # Another process may have summarised some meanwhile: the same result, kept once.
    s.execute(insert(SessionUsage).on_conflict_do_nothing(index_elements=["session_id"]), rows)


def summarize_ended(s: Session, now: datetime, limit: int = 20000) -> int:
    """Scheduler job: summarise ended sessions of the window not summarised yet, so a
    campaign start reads one row per session instead of every event."""
    rows = s.execute(select(RecordedSession.id, RecordedSession.protocol, RecordedSession.started_at,
                            RecordedSession.ended_at)
                     .outerjoin(SessionUsage, SessionUsage.session_id == RecordedSession.id)
                     .where(RecordedSession.started_at >= now - timedelta(days=WINDOW_DAYS),
                            RecordedSession.ended_at.is_not(None), SessionUsage.session_id.is_(None))
                     .limit(limit)).all()
    summaries(s, {sid: (proto, started, ended) for sid, proto, started, ended in rows})
    return len(rows)


# -- grants: what ran under them --------------------------------------------------------------

BULK_AT = 200  # grants: from here on one pass over the window beats a probe per grant


def usage_for(s: Session, grants: Iterable[GrantRef], now: datetime) -> dict[int, Usage]:
    """Usage of each grant over the last WINDOW_DAYS (since it existed, if later).

    Few grants: index probes per grant, (service_account, connection, started_at). Many
    (a campaign over everything): one range scan of the window on ix_sessions_started.
    Either way each session counts through its summary (see `summaries`).
    """
    grants = list(grants)
    out = {g.id: Usage(since=counted_since(g, now)) for g in grants}
    by_key = {(g.service_account, g.connection): out[g.id] for g in grants}
    owner: dict[str, Usage] = {}
    sessions: dict[str, _SessionRow] = {}
    cols = (RecordedSession.id, RecordedSession.protocol, RecordedSession.started_at, RecordedSession.ended_at,
            RecordedSession.service_account, RecordedSession.connection)
    known: dict[str, SessionSummary] = {}
    if len(grants) >= BULK_AT:
        start = now - timedelta(days=WINDOW_DAYS)
        found = []
        # One range scan of the window on ix_sessions_started, each summary by its key.
        for *row, ops, denials, last in s.connection().execute(
                select(*cols, SessionUsage.ops, SessionUsage.denials, SessionUsage.last_op_at)
                .outerjoin(SessionUsage, SessionUsage.session_id == RecordedSession.id)
                .where(RecordedSession.started_at >= start, RecordedSession.started_at <= now)):
            found.append(row)
            if ops is not None:
                known[row[0]] = SessionSummary(dict(ops), denials, last)
    else:
        found = (row for g in grants for row in s.execute(select(*cols).where(
            RecordedSession.service_account == g.service_account, RecordedSession.connection == g.connection,
            RecordedSession.started_at >= out[g.id].since, RecordedSession.started_at <= now)))
    for sid, proto, started, ended, sa, conn in found:
        u = by_key.get((sa, conn))
        if u is not None and started >= u.since:
            sessions[sid], owner[sid] = (proto, started, ended), u
    unknown = {sid: row for sid, row in sessions.items() if sid not in known}
    for sid, summary in [*known.items(), *summaries(s, unknown).items()]:
        if sid not in owner:
            continue
        u = owner[sid]
        u.denials += summary.denials
        if summary.ops:
            u.sessions += 1
            for k, n in summary.ops.items():
                u.ops[k] = u.ops.get(k, 0) + n
            if u.last_used is None or summary.last_op_at > u.last_used:
                u.last_used = summary.last_op_at
    _reviews(s, grants, out, by_key, now)
    return out


def _reviews(s: Session, grants: list[GrantRef], out: dict[int, Usage], by_key: dict, now: datetime) -> None:
    if len(grants) >= BULK_AT:
        rows = s.execute(select(Review.service_account, Review.connection, Review.status, Review.created_at)
                         .where(Review.created_at >= now - timedelta(days=WINDOW_DAYS), Review.created_at <= now))
    else:
        rows = (row for g in grants for row in s.execute(
            select(Review.service_account, Review.connection, Review.status, Review.created_at)
            .where(Review.service_account == g.service_account, Review.connection == g.connection,
                   Review.created_at >= out[g.id].since, Review.created_at <= now)))
    for sa, conn, status, created in rows:
        u = by_key.get((sa, conn))
        if u is not None and created >= u.since:
            u.reviews[status] = u.reviews.get(status, 0) + 1
    for u in out.values():
        if u.reviews:
            u.reviews["held"] = sum(u.reviews.values())


def last_used(s: Session, grant: Grant, now: datetime | None = None) -> datetime | None:
    """When an operation last ran under this grant (None: never). Newest sessions first,
    stopping at the first with an operation that ran."""
    from app.models import utcnow

    now = now or utcnow()
    rows = s.execute(select(RecordedSession.id, RecordedSession.protocol, RecordedSession.started_at,
                            RecordedSession.ended_at)
                     .where(RecordedSession.service_account == grant.service_account.name,
                            RecordedSession.connection == grant.connection.name,
                            RecordedSession.started_at >= grant.created_at, RecordedSession.started_at <= now)
                     .order_by(RecordedSession.started_at.desc()))
    for batch in _chunks(list(rows), 20):
        found = summaries(s, {sid: (proto, started, ended) for sid, proto, started, ended in batch}, keep=False)
        used = [found[sid].last_op_at for sid, *_ in batch if found[sid].last_op_at is not None]
        if used:
            return max(used)
    return None


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]
