"""What a reviewer needs around one held operation: the requester's recent history on
this connection, the run's earlier steps, and what became of the approval.

Bounded queries only (a handful of indexed lookups): the review page must stay fast
with years of history behind it.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEntry, RecordedSession, Review, SessionEvent
from app.portal import events as ev
from app.portal.filters import iso

HISTORY_SESSIONS = 5
HISTORY_OPS = 10
HISTORY_REVIEWS = 8
RUN_STEPS = 30


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _decisions(s: Session, sessions: list[RecordedSession], before: datetime | None, limit: int) -> list[dict]:
    if not sessions:
        return []
    by_id = {x.id: x for x in sessions}
    rows = s.execute(
        select(SessionEvent.session_id, SessionEvent.seq, SessionEvent.t, SessionEvent.kind, SessionEvent.data)
        .where(SessionEvent.session_id.in_(list(by_id)), SessionEvent.kind == "decision")
        .order_by(SessionEvent.id.desc()).limit(limit * 4)
    ).all()
    out = []
    seen: dict[tuple[str, int], tuple[dict, dict | None]] = {}  # every decision read: (recorded, shown)
    for sid, seq, t, kind, data in rows:
        sess = by_id[sid]
        (e,) = ev.parse([(seq, t, kind, data)])
        d = e.as_dict
        at = ev.absolute(_aware(sess.started_at), t)
        seen[(sid, seq)] = (d, None)
        if before is not None and at > before or len(out) >= limit:
            continue
        item = {"at": iso(at), "session_id": sid, "protocol": sess.protocol,
                "operation": str(d.get("operation") or "")[:300], "verdict": ev.verdict_of(d),
                "rule": d.get("rule") or "", "message": str(d.get("message") or "")[:200], "masked": 0}
        seen[(sid, seq)] = (d, item)
        out.append(item)
    _add_masked(s, seen)
    return out


def _add_masked(s: Session, seen: dict[tuple[str, int], tuple[dict, dict | None]]) -> None:
    """An operation is shown as masked only when its answer says values were masked
    ("masked": N on the output); its decision alone only names the rules that applied.
    Each such answer belongs to its own decision (ev.decision_for): the one of its HTTP
    flow, since HTTP/2 streams of one connection interleave; else (SQL, older
    recordings) the latest decision before it in its session, of the same statement
    when the answer names one."""
    shown = [(key, item) for key, (_, item) in seen.items() if item is not None and item["verdict"] in ("allow", "held-allow")]
    if not shown:
        return
    rows = s.execute(
        select(SessionEvent.session_id, SessionEvent.seq, SessionEvent.data)
        .where(SessionEvent.session_id.in_({sid for (sid, _), _ in shown}), SessionEvent.kind == "output",
               SessionEvent.seq > min(seq for (_, seq), _ in shown), SessionEvent.data.like('%"masked":%'))
        .order_by(SessionEvent.id.desc()).limit(4 * len(seen))
    ).all()
    by_session: dict[str, list[tuple[int, dict]]] = {}
    for (sid, seq), (decision, _) in seen.items():
        by_session.setdefault(sid, []).append((seq, decision))
    for sid, seq, data in rows:
        (e,) = ev.parse([(seq, 0.0, "output", data)])
        n = ev.masked_count(e.as_dict)
        if not n:
            continue
        owner = ev.decision_for(e.as_dict, [(k, d) for k, d in by_session.get(sid, ()) if k < seq])
        if owner is None:
            continue
        _, item = seen[(sid, owner)]
        if item is not None and item["verdict"] in ("allow", "held-allow") and not item["masked"]:
            item["masked"] = n
            if item["verdict"] == "allow":
                item["verdict"] = "masked"


def history(s: Session, review: Review) -> dict[str, Any]:
    """The requester's last operations and denials on this connection, and its earlier reviews."""
    sessions = s.scalars(
        select(RecordedSession).where(RecordedSession.service_account == review.service_account,
                                      RecordedSession.connection == review.connection)
        .order_by(RecordedSession.started_at.desc()).limit(HISTORY_SESSIONS)
    ).all()
    ops = _decisions(s, list(sessions), _aware(review.created_at), HISTORY_OPS)
    earlier = s.scalars(
        select(Review).where(Review.service_account == review.service_account,
                             Review.connection == review.connection, Review.id < review.id)
        .order_by(Review.id.desc()).limit(HISTORY_REVIEWS)
    ).all()
    return {
        "ops": ops,
        "denials": sum(1 for o in ops if o["verdict"] in ("deny", "held-deny", "error")),
        "reviews": [{"id": r.id, "status": r.status, "operation": r.operation[:300], "decided_by": r.decided_by or "",
                     "reason": r.reason or "", "at": iso(r.created_at)} for r in earlier],
    }


def run_steps(s: Session, review: Review) -> list[dict]:
    """The same agent run's steps before this one, oldest first."""
    if not review.run_id:
        return []
    sessions = s.scalars(select(RecordedSession).where(RecordedSession.run_id == review.run_id)
                         .order_by(RecordedSession.started_at.desc()).limit(20)).all()
    return list(reversed(_decisions(s, list(sessions), _aware(review.created_at), RUN_STEPS)))


def uses(s: Session, review: Review) -> list[dict]:
    """When the approval was used, by which session, with what result (the audit says)."""
    rows = s.scalars(
        select(AuditEntry).where(AuditEntry.target == f"review:{review.id}",
                                 AuditEntry.action.in_(("review.used", "review.use_returned")))
        .order_by(AuditEntry.seq).limit(20)
    ).all()
    return [{"at": iso(a.ts), "action": a.action, "actor": a.actor,
             "operation": str((a.data or {}).get("operation") or "")[:300],
             "session_id": (a.data or {}).get("session_id") or "",
             "result": "ran" if a.action == "review.used" else f"given back: {(a.data or {}).get('reason', '')}"}
            for a in rows]
