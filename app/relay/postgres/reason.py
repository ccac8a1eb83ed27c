"""The agent's own justification on a PostgreSQL session, for reviewers (pure).

Two ways to send it, both shown to approvers as "the agent says why" and never used in
a decision: `SET airlock.reason = '...'` (a custom setting PostgreSQL itself accepts),
or an `application_name` of the form `RUN_ID | reason`.
"""
from __future__ import annotations

import re

MAX_REASON = 1000
# application_name as these clients set it names the tool, not the agent's run.
TOOL_NAMES = frozenset({"psql", "pgbench", "pg_dump", "pg_dumpall", "pg_restore", "pg_basebackup", "vacuumdb"})
_SET_REASON = re.compile(
    r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?airlock\.reason\s*(?:=|\bTO\b)\s*'((?:[^']|'')*)'\s*;?\s*$",
    re.IGNORECASE | re.DOTALL)
_RESET_REASON = re.compile(r"^\s*RESET\s+airlock\.reason\s*;?\s*$", re.IGNORECASE)


def reason_set(text: str) -> str | None:
    """The reason a statement sets ("" for a RESET), or None when it sets none."""
    m = _SET_REASON.match(text)
    if m:
        return m.group(1).replace("''", "'")[:MAX_REASON]
    return "" if _RESET_REASON.match(text) else None


def split_app_name(app_name: str) -> tuple[str, str]:
    """'run-7f3a | fixing invoice 12' -> ('run-7f3a', 'fixing invoice 12')."""
    run, sep, reason = app_name.partition("|")
    return (run.strip(), reason.strip()[:MAX_REASON]) if sep else (app_name, "")
