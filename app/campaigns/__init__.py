"""Access reviews (recertification campaigns) and just-in-time access requests.

    runs        start a run (cron or on demand): one item per grant in scope
    usage       what a grant was used for: one definition for the whole product
    suggest     revoke / narrow to read-only / keep, with the reason in words
    decisions   certify or revoke (portal, Slack, bulk); a revoke takes the grant at once
    lifecycle   reminders, escalation in the last quarter, the deadline's action
    report      CSV and JSON evidence
    requests    JIT access requests, decided as reviews
    housekeeping  expiring grants and tokens, recording retention
    jobs        what the scheduler calls
"""
from __future__ import annotations

from app.campaigns.decisions import decide_from_slack
from app.campaigns.jobs import register_jobs
from app.slack import dm

dm.set_decider(decide_from_slack)

__all__ = ["register_jobs"]
