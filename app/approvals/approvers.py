"""Who is an approver: a portal role given by the policy's review rules (DESIGN §4).

The groups come from `app.policy.approvers` over the stored rules, parsed as the gate
parses them; this module only reads and caches them per policy version.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Rule as RuleRow
from app.policy import Rule
from app.policy.approvers import approver_groups as rules_approver_groups
from app.versions import current_version

log = logging.getLogger(__name__)
ROLES = ("admin", "approver", "auditor")
_cache: dict[str, tuple[int, float, frozenset[str]]] = {}


def approver_groups(session: Session) -> frozenset[str]:
    """Groups named as approvers by any review rule in the store (cached per policy version)."""
    key = str(session.get_bind().url)
    version = current_version(session)
    cached = _cache.get(key)
    if cached and cached[0] == version and time.monotonic() - cached[1] < 30:
        return cached[2]
    rules = []
    for body in session.scalars(select(RuleRow.body)):
        try:
            rules.append(Rule.from_dict(body))
        except Exception:  # stored rules were validated at apply; one that is not gives no role
            log.warning("a stored rule does not parse; it names no approvers")
    groups = rules_approver_groups(rules)
    _cache[key] = (version, time.monotonic(), groups)
    return groups


def roles_of(stored_roles: Iterable[str], groups: Iterable[str], approvers: Iterable[str]) -> frozenset[str]:
    """A portal user's roles: the known roles stored on the account, plus approver when
    the user is in any group a review rule names as approvers."""
    roles = {r for r in stored_roles if r in ROLES}
    if set(groups) & set(approvers):
        roles.add("approver")
    return frozenset(roles)
