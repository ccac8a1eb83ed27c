"""Recorded sessions: the filtered list, replay per protocol, asciicast download, run view."""
from __future__ import annotations

import json

from flask import Blueprint, Response, abort, render_template, request
from sqlalchemy import func, select

from app import recording
from app.db import session_scope
from app.models import RecordedSession, Review, SessionEvent
from app.portal import events as ev
from app.portal.present import pretty_sql, review_view
from app.portal.queries import PROTOCOLS, VERDICTS, BadFilter, list_sessions, session_filters
from app.portal.security import VIEW, requires

bp = Blueprint("sessions", __name__)
MAX_EVENTS = 5000  # one page of a replay; longer recordings are cut with a note
RUN_EVENTS_PER_SESSION = 500


def _session_or_404(s, session_id: str) -> RecordedSession:
    if len(session_id) > 36:
        abort(404)
    row = s.get(RecordedSession, session_id)
    if row is None:
        abort(404)
    return row


def _choices(s) -> dict[str, list[str]]:
    """Names for the filter drop-downs (distinct values use the filter indexes)."""
    out = {}
    for col in (RecordedSession.service_account, RecordedSession.connection):
        out[col.key] = [v for v in s.scalars(select(col).distinct().order_by(col).limit(500)) if v]
    return out


@bp.get("/sessions")
@requires(*VIEW)
def index():
    error = None
    try:
        filters = session_filters(request.args)
        cursor = request.args.get("cursor") or None
    except BadFilter as exc:
        filters, cursor, error = session_filters({}), None, str(exc)
    with session_scope() as s:
        try:
            page = list_sessions(s, filters, cursor=cursor)
        except BadFilter as exc:
            page, error = list_sessions(s, filters), str(exc)
        choices = _choices(s)
        total = s.scalar(select(func.count(RecordedSession.id)))
    return render_template("sessions/index.html", page=page, f=filters, choices=choices, total=total,
                           protocols=PROTOCOLS, verdicts=list(VERDICTS), error=error), (400 if error else 200)


@bp.get("/sessions/<session_id>")
@requires(*VIEW)
def detail(session_id: str):
    with session_scope() as s:
        row = _session_or_404(s, session_id)
        rows = s.execute(
            select(SessionEvent.seq, SessionEvent.t, SessionEvent.kind, SessionEvent.data)
            .where(SessionEvent.session_id == session_id).order_by(SessionEvent.seq).limit(MAX_EVENTS + 1)
        ).all()
        reviews = [review_view(r) for r in s.scalars(select(Review).where(Review.session_id == session_id)
                                                          .order_by(Review.id).limit(100))]
        events = ev.parse(rows[:MAX_EVENTS])
        truncated = len(rows) > MAX_EVENTS
        sess = row
    steps, loose = ev.steps(events) if sess.protocol in ("http", "postgres", "mysql") else ([], events)
    decisions = [e for e in events if e.kind == "decision"]
    return render_template("sessions/detail.html", sess=sess, events=events, steps=steps, loose=loose,
                           decisions=decisions, reviews=reviews, truncated=truncated, ev=ev,
                           pretty_sql=pretty_sql, max_events=MAX_EVENTS)


@bp.get("/sessions/<session_id>.cast")
@requires(*VIEW)
def cast(session_id: str):
    with session_scope() as s:
        row = _session_or_404(s, session_id)
        try:
            text = recording.asciicast(s, session_id)
        except (KeyError, ValueError, TypeError):
            # An event of a shape the exporter does not expect: export tolerantly instead.
            text = _tolerant_cast(s, row)
    download = request.args.get("download") == "1"
    resp = Response(text, mimetype="application/x-asciicast")
    if download:
        resp.headers["Content-Disposition"] = f'attachment; filename="airlock-{row.id}.cast"'
    return resp


def _tolerant_cast(s, row: RecordedSession) -> str:
    meta = row.meta or {}
    header = {"version": 2, "width": _int(meta.get("width"), 80), "height": _int(meta.get("height"), 24),
              "timestamp": int(row.started_at.timestamp()), "title": f"{row.service_account}@{row.connection}"}
    lines = [json.dumps(header)]
    for e in ev.parse(s.execute(select(SessionEvent.seq, SessionEvent.t, SessionEvent.kind, SessionEvent.data)
                                .where(SessionEvent.session_id == row.id).order_by(SessionEvent.seq))):
        d = e.as_dict
        if e.kind == "resize":
            lines.append(json.dumps([e.t, "r", f"{_int(d.get('width'), 80)}x{_int(d.get('height'), 24)}"]))
        elif e.kind in ("output", "input"):
            text = d.get("text") if isinstance(d.get("text"), str) else (e.data if isinstance(e.data, str) else "")
            lines.append(json.dumps([e.t, "o" if e.kind == "output" else "i", text], ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _int(value, default: int) -> int:
    try:
        return max(1, min(int(value), 1000))
    except (TypeError, ValueError):
        return default


@bp.get("/runs/<run_id>")
@requires(*VIEW)
def run(run_id: str):
    """Everything one agent run did, across protocols, on one timeline."""
    if len(run_id) > 200:
        abort(404)
    with session_scope() as s:
        sessions = s.scalars(select(RecordedSession).where(RecordedSession.run_id == run_id)
                             .order_by(RecordedSession.started_at).limit(200)).all()
        reviews = [review_view(r) for r in s.scalars(select(Review).where(Review.run_id == run_id)
                                                          .order_by(Review.id).limit(200))]
        timeline = []
        for sess in sessions:
            rows = s.execute(select(SessionEvent.seq, SessionEvent.t, SessionEvent.kind, SessionEvent.data)
                             .where(SessionEvent.session_id == sess.id).order_by(SessionEvent.seq)
                             .limit(RUN_EVENTS_PER_SESSION)).all()
            for e in ev.parse(rows):
                if e.kind == "resize":
                    continue
                # An answer in which values were actually masked says so; a decision never
                # does (its mask rules may find nothing).
                masked = ev.masked_count(e.as_dict) if e.kind == "output" else 0
                timeline.append({"at": ev.absolute(sess.started_at, e.t), "session": sess, "kind": e.kind,
                                 "summary": ev.summary(sess.protocol, e), "masked": masked,
                                 "verdict": ev.verdict_of(e.as_dict) if e.kind == "decision"
                                 else "masked" if masked else ""})
    if not sessions and not reviews:
        abort(404)
    timeline.sort(key=lambda item: item["at"])
    protocols = sorted({x.protocol for x in sessions})
    return render_template("sessions/run.html", run_id=run_id, sessions=sessions, reviews=reviews,
                           timeline=timeline, protocols=protocols)
