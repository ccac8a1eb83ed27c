"""Starting campaign runs: on their cron, or on demand. One item per grant in scope."""
from __future__ import annotations

import fnmatch
from datetime import datetime, timedelta, timezone

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app import audit
from app.campaigns.reviewers import reviewer_for
from app.campaigns.suggest import suggest
from app.campaigns.usage import GrantRef, usage_for
from app.models import Campaign, CampaignItem, CampaignRun, Connection, Grant, ServiceAccount, utcnow
from app.policy import cron_to_apscheduler


class CampaignError(Exception):
    """A campaign operation refused; `message` is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def get_campaign(s: Session, name: str) -> Campaign:
    c = s.scalars(select(Campaign).where(Campaign.name == name)).first()
    if c is None:
        raise CampaignError(f"no campaign named {name!r} (campaigns come from the policy file's campaigns:)")
    return c


def open_run(s: Session, campaign: Campaign) -> CampaignRun | None:
    return s.scalars(select(CampaignRun).where(CampaignRun.campaign_id == campaign.id, CampaignRun.status == "open")
                     .order_by(CampaignRun.id.desc())).first()


def latest_run(s: Session, campaign: Campaign) -> CampaignRun | None:
    return s.scalars(select(CampaignRun).where(CampaignRun.campaign_id == campaign.id)
                     .order_by(CampaignRun.started_at.desc(), CampaignRun.id.desc())).first()


def in_scope(campaign: Campaign, service_account: str, connection: str) -> bool:
    scope = campaign.scope or {}
    conns, accounts = scope.get("connections") or [], scope.get("service_accounts") or []
    return ((not conns or any(fnmatch.fnmatchcase(connection, p) for p in conns))
            and (not accounts or any(fnmatch.fnmatchcase(service_account, p) for p in accounts)))


def start_run(s: Session, campaign: Campaign, *, started_by: str, now: datetime | None = None) -> CampaignRun:
    """Open a run with one item per live grant in scope, each with its usage and suggestion."""
    now = now or utcnow()
    if open_run(s, campaign) is not None:
        raise CampaignError(f"campaign {campaign.name!r} already has an open run; it ends at its deadline")
    rows = s.execute(select(Grant.id, Grant.created_at, Grant.expires_at, ServiceAccount.name, Connection.name,
                            Connection.type, Connection.owner)
                     .join(ServiceAccount, ServiceAccount.id == Grant.service_account_id)
                     .join(Connection, Connection.id == Grant.connection_id)
                     .where(Grant.revoked_at.is_(None), ServiceAccount.disabled.is_(False)).order_by(Grant.id)).all()
    live = [r for r in rows if (r[2] is None or r[2] > now) and in_scope(campaign, r[3], r[4])]
    run = CampaignRun(campaign=campaign, status="open", started_at=now, started_by=started_by,
                      deadline=now + timedelta(seconds=campaign.duration_seconds))
    s.add(run)
    s.flush()
    usage = usage_for(s, [GrantRef(gid, sa, conn, created) for gid, created, _, sa, conn, _, _ in live], now)
    items = []
    for gid, created, _, sa, conn, ctype, owner in live:
        u = usage[gid]
        advice = suggest(u, service_account=sa, connection=conn, protocol=ctype, granted_at=created, now=now,
                         unused_after=campaign.unused_after_seconds, campaign=campaign.name)
        items.append(dict(
            run_id=run.id, grant_id=gid, service_account=sa, connection=conn,
            reviewer=reviewer_for(campaign.reviewers, owner), status="pending", usage=u.to_dict(),
            suggestion=advice.action, suggestion_reason=advice.reason, policy_change=advice.policy_change,
            justification="", flagged=False, deadline_outcome=""))
    if items:  # one executemany: a campaign over everything has thousands
        s.execute(insert(CampaignItem.__table__), items)
    s.expire(run, ["items"])
    audit.append(s, started_by, "campaign.start", f"campaign:{campaign.name}", {
        "run_id": run.id, "items": len(items), "deadline": run.deadline.isoformat(), "started_by": started_by})
    return run


def start_by_name(s: Session, name: str, *, actor: str, now: datetime | None = None) -> CampaignRun:
    campaign = get_campaign(s, name)
    if not campaign.enabled:
        raise CampaignError(f"campaign {name!r} is disabled in the policy")
    return start_run(s, campaign, started_by=actor, now=now)


def next_due(campaign: Campaign, after: datetime) -> datetime | None:
    if not campaign.schedule:
        return None
    trigger = CronTrigger(**cron_to_apscheduler(campaign.schedule), timezone=timezone.utc)
    return trigger.get_next_fire_time(None, after + timedelta(microseconds=1))


def start_due(s: Session, now: datetime) -> list[CampaignRun]:
    """Start every enabled campaign whose cron fired since its last run (or its creation).

    Fire times missed while no scheduler ran coalesce into one start; a campaign that
    still has an open run waits for it to close.
    """
    started = []
    for campaign in s.scalars(select(Campaign).where(Campaign.enabled.is_(True)).order_by(Campaign.id)):
        last = latest_run(s, campaign)
        due = next_due(campaign, last.started_at if last is not None else campaign.created_at)
        if due is None or due > now or (last is not None and last.status == "open"):
            continue
        started.append(start_run(s, campaign, started_by="schedule", now=now))
    return started


def progress(run: CampaignRun) -> dict[str, int]:
    counts = {"total": len(run.items), "pending": 0, "certified": 0, "revoked": 0, "kept": 0}
    for item in run.items:
        counts[item.status] = counts.get(item.status, 0) + 1
    counts["done"] = counts["total"] - counts["pending"]
    return counts
