"""Access reviews in the portal: campaigns, run progress, "My reviews", decisions, evidence."""
from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select

from app.campaigns import decisions
from app.campaigns.report import render as render_report
from app.campaigns.reviewers import mine_filter
from app.campaigns.runs import CampaignError, latest_run, next_due, progress, start_by_name
from app.db import session_scope
from app.models import Campaign, CampaignItem, CampaignRun, user_by_email, utcnow
from app.portal.security import ADMIN, VIEW, VOTE, principal, requires

bp = Blueprint("campaigns", __name__)


def my_open_items(s, email: str):
    user = user_by_email(s, email)
    if user is None:
        return None
    return (select(CampaignItem).join(CampaignRun).where(CampaignRun.status == "open", CampaignItem.status == "pending",
                                                         mine_filter(user)))


def review_badge() -> int:
    """Open review items for the signed-in person: the navigation badge."""
    me = principal()
    if not getattr(me, "is_authenticated", False):
        return 0
    with session_scope() as s:
        stmt = my_open_items(s, me.email)
        return s.scalar(select(func.count()).select_from(stmt.subquery())) if stmt is not None else 0


@bp.app_context_processor
def _badge():
    return {"review_badge": review_badge}


@bp.get("/campaigns")
@requires(*VIEW)
def index():
    now = utcnow()
    with session_scope() as s:
        rows = []
        for c in s.scalars(select(Campaign).order_by(Campaign.name)):
            run = latest_run(s, c)
            rows.append({"campaign": c, "run": run, "progress": progress(run) if run else None,
                         "next": next_due(c, run.started_at if run else now) if c.enabled else None})
        return render_template("campaigns/index.html", rows=rows, now=now)


@bp.post("/campaigns/<name>/start")
@requires(*ADMIN)
def start(name: str):
    try:
        with session_scope() as s:
            run = start_by_name(s, name, actor=principal().email)
            run_id, n = run.id, len(run.items)
    except CampaignError as exc:
        flash(exc.message, "error")
        return redirect(url_for(".index"))
    flash(f"Campaign {name}: run {run_id} started with {n} item(s). Reviewers see them under My reviews.", "ok")
    return redirect(url_for(".run", run_id=run_id))


@bp.get("/campaigns/runs/<id:run_id>")
@requires(*VIEW)
def run(run_id: int):
    with session_scope() as s:
        r = s.get(CampaignRun, run_id)
        if r is None:
            abort(404)
        items = sorted(r.items, key=lambda i: (i.status != "pending", i.reviewer, i.id))
        return render_template("campaigns/run.html", run=r, items=items, progress=progress(r))


@bp.get("/campaigns/runs/<id:run_id>/report.<fmt>")
@requires(*VIEW)
def report(run_id: int, fmt: str):
    if fmt not in ("csv", "json"):
        abort(404)
    with session_scope() as s:
        r = s.get(CampaignRun, run_id)
        if r is None:
            abort(404)
        body, name = render_report(r, fmt), f"{r.campaign.name}-run-{r.id}.{fmt}"
    mime = "text/csv" if fmt == "csv" else "application/json"
    return Response(body, mimetype=mime, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/campaigns/reviews")
@requires(*VIEW)
def mine():
    me = principal()
    with session_scope() as s:
        stmt = my_open_items(s, me.email)
        items = list(s.scalars(stmt.order_by(CampaignRun.deadline, CampaignItem.id))) if stmt is not None else []
        runs = {i.run_id: i.run for i in items}
        return render_template("campaigns/mine.html", items=items,
                               runs=[(r, progress(r)) for r in sorted(runs.values(), key=lambda r: r.deadline)],
                               can_vote=me.can(VOTE))


@bp.post("/campaigns/items/<id:item_id>/decide")
@requires(*VOTE)
def decide(item_id: int):
    decision = request.form.get("decision", "")
    try:
        with session_scope() as s:
            item = decisions.decide(s, item_id, decision, principal().email, request.form.get("justification", ""))
            what = f"{item.service_account} → {item.connection}"
    except CampaignError as exc:
        flash(exc.message, "error")
    else:
        flash(f"{what}: {'revoked; it stops working within a second' if decision == 'revoke' else 'certified'}.", "ok")
    return redirect(url_for(".mine"))


@bp.post("/campaigns/reviews/accept")
@requires(*VOTE)
def accept():
    ids = [int(v) for v in request.form.getlist("item") if v.isdigit()]
    if not ids:
        flash("Select the items whose suggestions you accept.", "error")
        return redirect(url_for(".mine"))
    try:
        with session_scope() as s:
            done = decisions.accept_suggestions(s, ids, principal().email)
    except CampaignError as exc:
        flash(exc.message, "error")  # nothing was applied: the whole batch rolled back
    else:
        flash(f"Suggestions accepted: {done['revoked']} revoked, {done['certified']} certified "
              f"({done['narrowed']} narrowed to read-only), {done['skipped']} already decided.", "ok")
    return redirect(url_for(".mine"))
