"""Certify or revoke an item: one at a time, in bulk, from the portal or a Slack DM.

A revoke takes the grant away in the same transaction and bumps the policy version,
so every gate drops it within a second and the relay ends its open sessions.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import audit, bus
from app.campaigns.reviewers import may_decide
from app.campaigns.runs import CampaignError
from app.changes import ChangeError, edit
from app.models import CampaignItem, Grant, user_by_email, utcnow
from app.versions import bump_version

DECISIONS = ("certify", "revoke")


def lock_item(s: Session, item_id: int) -> CampaignItem | None:
    """The item, locked: two reviewers (or a reviewer and the deadline) take turns."""
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text("UPDATE campaign_items SET id = id WHERE id = :id"), {"id": item_id})
        stmt = select(CampaignItem).where(CampaignItem.id == item_id)
    else:
        stmt = select(CampaignItem).where(CampaignItem.id == item_id).with_for_update()
    return s.scalars(stmt.execution_options(populate_existing=True)).first()


def take_grant(s: Session, grant_id: int | None, *, actor: str, reason: str, now: datetime,
               action: str = "grant.revoke") -> bool:
    """Revoke a live grant (False: already gone). The version bump makes every process notice."""
    grant = s.get(Grant, grant_id) if grant_id is not None else None
    if grant is None or grant.revoked_at is not None:
        return False
    grant.revoked_at, grant.revoked_by = now, actor
    bump_version(s)
    audit.append(s, actor, action, f"{grant.service_account.name}->{grant.connection.name}",
                 {"grant_id": grant.id, "source": grant.source, "reason": reason})
    bus.publish(s, "grants", str(grant.id))
    return True


def decide(s: Session, item_id: int, decision: str, actor: str, justification: str = "", *, via: str = "portal",
           now: datetime | None = None) -> CampaignItem:
    now = now or utcnow()
    actor = (actor or "").strip().lower()
    justification = (justification or "").strip()
    if decision not in DECISIONS:
        raise CampaignError(f"unknown decision {decision!r}")
    item = lock_item(s, item_id)
    if item is None:
        raise CampaignError(f"review item {item_id} does not exist")
    if not may_decide(user_by_email(s, actor), item):
        raise CampaignError(f"{actor} is not a reviewer of item {item_id} ({item.reviewer})")
    if item.status != "pending":
        raise CampaignError(f"item {item_id} is already {item.status}"
                            + (f" by {item.decided_by}" if item.decided_by else ""))
    if item.run.status != "open":
        raise CampaignError(f"the campaign run of item {item_id} is closed")
    if decision == "certify" and not justification:
        raise CampaignError("certifying needs a justification: why does it still need this access?")
    item.status = "certified" if decision == "certify" else "revoked"
    item.justification, item.decided_by, item.decided_at, item.decided_via = justification, actor, now, via
    if decision == "revoke":
        take_grant(s, item.grant_id, actor=actor, reason=f"access review {item.run.campaign.name}", now=now)
    audit.append(s, actor, f"campaign.{decision}", f"{item.service_account}->{item.connection}", {
        "campaign": item.run.campaign.name, "run_id": item.run_id, "item_id": item.id, "grant_id": item.grant_id,
        "justification": justification, "via": via, "suggestion": item.suggestion})
    return item


def accept_suggestions(s: Session, item_ids: list[int], actor: str, *, now: datetime | None = None) -> dict[str, int]:
    """Bulk: revoke what is suggested for revocation; certify the rest, with the suggestion's
    reason as the justification (a narrowing suggestion also adds its read-only rule)."""
    now = now or utcnow()
    done = {"revoked": 0, "certified": 0, "narrowed": 0, "skipped": 0}
    for item_id in item_ids:
        item = s.get(CampaignItem, item_id)
        if item is None or item.status != "pending":
            done["skipped"] += 1
            continue
        if item.suggestion == "revoke":
            decide(s, item_id, "revoke", actor, f"accepted suggestion: {item.suggestion_reason}", now=now, via="bulk")
            done["revoked"] += 1
            continue
        if item.suggestion == "narrow" and item.policy_change:
            add_rules(s, item.policy_change, actor)
            done["narrowed"] += 1
        decide(s, item_id, "certify", actor, f"accepted suggestion: {item.suggestion_reason}", now=now, via="bulk")
        done["certified"] += 1
    return done


def add_rules(s: Session, policy_change: str, actor: str) -> None:
    """Add the rules of a suggested policy change (skipping one that is already there)."""
    import yaml

    rules = (yaml.safe_load(policy_change) or {}).get("rules") or []

    def mutate(data):
        names = {r.get("name") for r in data.get("rules") or []}
        data["rules"] = list(data.get("rules") or []) + [r for r in rules if r.get("name") not in names]

    try:
        edit(s, actor, mutate)
    except ChangeError as exc:
        raise CampaignError("the read-only rule could not be added: " + "; ".join(exc.problems)) from None


def decide_from_slack(s: Session, item_id: int, decision: str, reviewer: str, justification: str) -> str:
    """The Slack DM's decider: the same checks as the portal; the line the DM shows after."""
    from app.slack.dm import ItemError

    try:
        item = decide(s, item_id, decision, reviewer, justification, via="slack")
    except CampaignError as exc:
        raise ItemError(exc.message) from None
    if item.status == "revoked":
        return f":no_entry: Revoked by {reviewer}: {item.service_account} no longer reaches {item.connection}."
    return f":white_check_mark: Certified by {reviewer}: {justification}"
