"""Who reviews an item, and who may decide it.

An item's reviewer is a user's email, "group:NAME" (anyone in the group), or
"role:admin" (a connection with no owner: the admins answer for it).
"""
from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.models import CampaignItem, Group, User, user_groups

ADMINS = "role:admin"


def reviewer_for(rule: str, owner: str) -> str:
    """The reviewer of a grant: the campaign's group, or the connection's owner."""
    if rule.startswith("group:"):
        return rule
    return owner.strip().lower() if owner and not owner.startswith("group:") else (owner or ADMINS)


def principals_of(user: User) -> set[str]:
    """Every reviewer value that names this user."""
    out = {user.email.lower()} | {f"group:{g}" for g in user.group_names}
    if "admin" in (user.roles or []):
        out.add(ADMINS)
    return out


def may_decide(user: User | None, item: CampaignItem) -> bool:
    """The item's reviewer (or, once escalated, whoever it was escalated from), or an admin."""
    if user is None or not user.active:
        return False
    mine = principals_of(user)
    if ADMINS in mine:
        return True
    return item.reviewer.lower() in mine or (item.escalated_from or "").lower() in mine


def mine_filter(user: User):
    names = principals_of(user)
    return or_(func.lower(CampaignItem.reviewer).in_(names), func.lower(CampaignItem.escalated_from).in_(names))


def members(s: Session, reviewer: str) -> list[str]:
    """The emails a reminder for `reviewer` goes to."""
    if reviewer.startswith("group:"):
        return list(s.scalars(select(User.email).join(user_groups, user_groups.c.user_id == User.id)
                              .join(Group, Group.id == user_groups.c.group_id)
                              .where(Group.name == reviewer[6:], User.active.is_(True)).order_by(User.email)))
    if reviewer == ADMINS:
        return [u.email for u in s.scalars(select(User).where(User.active.is_(True)).order_by(User.email))
                if "admin" in (u.roles or [])]
    return [reviewer]
