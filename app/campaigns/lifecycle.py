"""A run over time: reminders, escalation in the last quarter, and the deadline.

Every function takes `now`, so tests drive time instead of sleeping.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit
from app.campaigns.decisions import take_grant
from app.campaigns.reviewers import ADMINS, members
from app.config import settings
from app.models import CampaignItem, CampaignRun
from app.slack import dm

DEADLINE_ACTOR = "airlock (deadline)"
ESCALATION_GRACE = timedelta(days=3)  # the longest an escalated item gets after the deadline


def open_runs(s: Session) -> list[CampaignRun]:
    return list(s.scalars(select(CampaignRun).where(CampaignRun.status == "open").order_by(CampaignRun.id)))


def run_url(run: CampaignRun) -> str:
    return f"{settings().public_url}/campaigns/reviews"


def _pending_by_reviewer(run: CampaignRun) -> dict[str, list[CampaignItem]]:
    out: dict[str, list[CampaignItem]] = defaultdict(list)
    for item in run.items:
        if item.status == "pending":
            out[item.reviewer].append(item)
    return out


def _dm_item(item: CampaignItem) -> dm.ReviewItem:
    from app.campaigns.usage import Usage

    u = item.usage or {}
    last = u.get("last_used")
    usage = Usage(since=datetime.fromisoformat(u["since"]), sessions=u.get("sessions", 0), ops=u.get("ops") or {},
                  denials=u.get("denials", 0), reviews=u.get("reviews") or {}) if u.get("since") else None
    return dm.ReviewItem(id=item.id, service_account=item.service_account, connection=item.connection,
                         last_used=datetime.fromisoformat(last) if last else None,
                         usage=usage.summary() if usage else "",
                         suggestion=f"{item.suggestion}: {item.suggestion_reason}" if item.suggestion else "")


def notify(s: Session, run: CampaignRun, reviewer: str, items: list[CampaignItem], *, title: str) -> int:
    """DM each person behind `reviewer` their items; how many people were sent one."""
    sent = 0
    for email in members(s, reviewer):
        if dm.send_review_items(s, reviewer_email=email, items=[_dm_item(i) for i in items], title=title,
                                deadline=min(i.due_at or run.deadline for i in items), portal_url=run_url(run)):
            sent += 1
    return sent


def remind(s: Session, now: datetime) -> int:
    """Every `remind_every`, reviewers with open items get a DM; returns reviewers reminded."""
    reminded = 0
    for run in open_runs(s):
        every = run.campaign.remind_every_seconds
        if not every or now - (run.last_reminded_at or run.started_at) < timedelta(seconds=every):
            continue
        pending = _pending_by_reviewer(run)
        for reviewer, items in pending.items():
            notify(s, run, reviewer, items, title=f"Reminder: access review {run.campaign.name}")
            audit.append(s, "airlock", "campaign.remind", f"campaign:{run.campaign.name}",
                         {"run_id": run.id, "reviewer": reviewer, "open_items": len(items)})
            reminded += 1
        run.last_reminded_at = now
    return reminded


def escalation_target(run: CampaignRun, reviewer: str) -> str:
    if run.campaign.escalate_to:
        return run.campaign.escalate_to
    return reviewer if reviewer.startswith("group:") and reviewer != ADMINS else ADMINS


def escalate(s: Session, now: datetime) -> int:
    """In a run's last quarter, open items are escalated: also the escalation group (or the
    admins) may decide them, and they are told. Returns items escalated."""
    n = 0
    for run in open_runs(s):
        quarter = (run.deadline - run.started_at) / 4
        if run.escalated_at is not None or now < run.deadline - quarter or now >= run.deadline:
            continue
        run.escalated_at = now
        for reviewer, items in _pending_by_reviewer(run).items():
            target = escalation_target(run, reviewer)
            for item in items:
                if target != reviewer:
                    item.escalated_from, item.reviewer = reviewer, target
                n += 1
            notify(s, run, target, items, title=f"Escalated: access review {run.campaign.name} is due soon")
            audit.append(s, "airlock", "campaign.escalate", f"campaign:{run.campaign.name}", {
                "run_id": run.id, "from": reviewer, "to": target, "items": [i.id for i in items]})
    return n


def close_due(s: Session, now: datetime) -> dict[str, int]:
    """Apply `on_deadline` to open items past their deadline; close runs with nothing left."""
    counts = {"revoked": 0, "kept": 0, "escalated": 0, "closed": 0}
    for run in open_runs(s):
        if run.deadline > now:
            continue
        campaign = run.campaign
        for item in run.items:
            if item.status != "pending" or (item.due_at is not None and item.due_at > now):
                continue
            action = campaign.on_deadline if item.due_at is None else "revoke"  # an escalation's end fails closed
            if action == "escalate":
                target = campaign.escalate_to or ADMINS
                item.escalated_from = item.escalated_from or item.reviewer
                item.reviewer = target
                item.due_at = now + min(ESCALATION_GRACE, max((run.deadline - run.started_at) / 4, timedelta(hours=1)))
                item.deadline_outcome = f"escalated to {target}, due {item.due_at:%Y-%m-%d %H:%M} UTC"
                notify(s, run, target, [item], title=f"Escalated to you: access review {campaign.name}")
                counts["escalated"] += 1
            elif action == "keep":
                item.status, item.flagged = "kept", True
                item.decided_by, item.decided_at, item.decided_via = DEADLINE_ACTOR, now, "deadline"
                item.deadline_outcome = "kept: no review (flagged)"
                counts["kept"] += 1
            else:
                item.status, item.decided_by, item.decided_at, item.decided_via = "revoked", DEADLINE_ACTOR, now, "deadline"
                item.deadline_outcome = ("revoked: no review" if item.due_at is None
                                         else "revoked: no review after escalation")
                take_grant(s, item.grant_id, actor=DEADLINE_ACTOR, reason=item.deadline_outcome, now=now)
                counts["revoked"] += 1
            audit.append(s, DEADLINE_ACTOR, "campaign.deadline", f"{item.service_account}->{item.connection}", {
                "campaign": campaign.name, "run_id": run.id, "item_id": item.id, "grant_id": item.grant_id,
                "outcome": item.deadline_outcome})
        if all(i.status != "pending" for i in run.items):
            run.status, run.closed_at = "closed", now
            audit.append(s, "airlock", "campaign.close", f"campaign:{campaign.name}", {
                "run_id": run.id, "items": len(run.items)})
            counts["closed"] += 1
    return counts
