"""The dashboard: what needs attention now, and how the last two weeks went."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Blueprint, render_template
from sqlalchemy import and_, func, select

from app.campaigns.usage import last_used
from app.db import session_scope
from app.models import AuditEntry, Grant, RecordedSession, Review, utcnow
from app.portal.present import review_view
from app.portal.security import VIEW, requires

bp = Blueprint("dashboard", __name__)
DAYS = 14
UNUSED_DAYS = 30
ACTIVE_WINDOW = timedelta(days=1)  # an unclosed session older than this is a crash leftover
CHART_ACTIONS = ("decision.deny", "review.approved", "review.rejected")


def per_day(s, now: datetime) -> list[dict]:
    start = (now - timedelta(days=DAYS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = func.date(AuditEntry.ts)
    rows = s.execute(
        select(day, AuditEntry.action, func.count())
        .where(AuditEntry.ts >= start, AuditEntry.action.in_(CHART_ACTIONS))
        .group_by(day, AuditEntry.action)
    ).all()
    counts: dict[tuple[str, str], int] = {(str(d), a): n for d, a, n in rows}
    out = []
    for i in range(DAYS):
        d = (start + timedelta(days=i)).date().isoformat()
        out.append({"day": d, "denied": counts.get((d, "decision.deny"), 0),
                    "approved": counts.get((d, "review.approved"), 0),
                    "rejected": counts.get((d, "review.rejected"), 0)})
    return out


def chart(days: list[dict], width: int = 640, height: int = 180) -> dict:
    """Bar geometry for an inline SVG: no chart library, nothing to load."""
    peak = max([max(d["denied"], d["approved"]) for d in days] + [1])
    pad_l, pad_b, pad_t = 34, 22, 10
    inner_h = height - pad_b - pad_t
    slot = (width - pad_l) / len(days)
    bar = max(3.0, slot / 2 - 3)
    bars = []
    for i, d in enumerate(days):
        x = pad_l + i * slot + 2
        for j, (key, value) in enumerate((("approved", d["approved"]), ("denied", d["denied"]))):
            h = inner_h * value / peak
            bars.append({"x": round(x + j * (bar + 1), 1), "y": round(pad_t + inner_h - h, 1), "w": round(bar, 1),
                         "h": round(h, 1), "cls": key, "title": f"{d['day']}: {value} {key}"})
    ticks = [{"y": round(pad_t + inner_h - inner_h * f, 1), "label": round(peak * f)} for f in (0, 0.5, 1)]
    labels = [{"x": round(pad_l + i * slot + slot / 2, 1), "text": d["day"][5:]} for i, d in enumerate(days) if i % 2 == 0]
    return {"width": width, "height": height, "bars": bars, "ticks": ticks, "labels": labels, "pad_l": pad_l,
            "base": pad_t + inner_h}


def unused_grants(s, now: datetime, limit: int = 10) -> list[dict]:
    cutoff = now - timedelta(days=UNUSED_DAYS)
    out = []
    grants = s.scalars(
        select(Grant).where(Grant.revoked_at.is_(None), Grant.created_at < cutoff,
                            (Grant.expires_at.is_(None)) | (Grant.expires_at > now))
        .order_by(Grant.id).limit(500)
    ).all()
    for g in grants:
        # The access reviews' definition: an operation that ran under this grant.
        used = last_used(s, g, now)
        if used is None or used < cutoff:
            out.append({"id": g.id, "service_account": g.service_account.name, "connection": g.connection.name,
                        "last_used": used, "created_at": g.created_at, "expires_at": g.expires_at})
            if len(out) >= limit:
                break
    return out


@bp.get("/")
@requires(*VIEW)
def index():
    now = utcnow()
    with session_scope() as s:
        pending, pending_count = _pending(s, now)
        days = per_day(s, now)
        top = s.execute(
            select(Review.service_account, func.count(Review.id).label("n"))
            .where(Review.created_at >= now - timedelta(days=30))
            .group_by(Review.service_account).order_by(func.count(Review.id).desc()).limit(5)
        ).all()
        active_q = and_(RecordedSession.ended_at.is_(None), RecordedSession.started_at >= now - ACTIVE_WINDOW)
        active_count = s.scalar(select(func.count(RecordedSession.id)).where(active_q))
        active = s.scalars(select(RecordedSession).where(active_q)
                           .order_by(RecordedSession.started_at.desc()).limit(8)).all()
        unused = unused_grants(s, now)
    totals = {k: sum(d[k] for d in days) for k in ("denied", "approved", "rejected")}
    return render_template("dashboard.html", pending=pending, pending_count=pending_count, days=days,
                           chart=chart(days), totals=totals, top=top, top_max=max([n for _, n in top] + [1]),
                           active=active, active_count=active_count, unused=unused, unused_days=UNUSED_DAYS,
                           now=now.astimezone(timezone.utc))


def _pending(s, now: datetime) -> tuple[list[dict], int]:
    rows = s.scalars(select(Review).where(Review.status == "pending", Review.expires_at > now)
                     .order_by(Review.expires_at).limit(6)).all()
    count = s.scalar(select(func.count(Review.id)).where(Review.status == "pending", Review.expires_at > now))
    return [review_view(r, now) for r in rows], count or 0


@bp.get("/dashboard/pending")
@requires(*VIEW)
def pending_card():
    """The dashboard's pending-reviews card, fetched again when the counts change."""
    now = utcnow()
    with session_scope() as s:
        pending, pending_count = _pending(s, now)
    return render_template("_dash_pending.html", pending=pending, pending_count=pending_count)
