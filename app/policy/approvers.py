"""Who approves, as the policy says it (pure)."""
from __future__ import annotations

from typing import Iterable

from .rules import Rule


def approver_groups(rules: Iterable[Rule]) -> frozenset[str]:
    """Groups named as approvers by any review rule, enabled or not: reviews a disabled
    rule opened may still be waiting for them."""
    return frozenset(g for r in rules if r.action == "review" and r.approvers is not None
                     for g in r.approvers.groups)
