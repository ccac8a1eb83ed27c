"""Review lifecycle: create, vote, expire, use an approval, and await a decision.

The portal, the API and the Slack bot all call `vote`, and ask `vote_refusal` before
showing a vote; the gate (app.gate.sqlstore) calls `standing_use`, `find_pending`,
`create_review` and `wait_for_decision`. Rules that hold everywhere: no self-approval,
one rejection rejects, approvals count per distinct voter, an approve-once review lets
exactly one operation through.

Every state change is audited and announced on the bus (`reviews` for queue
watchers, `review:<id>` for whoever waits on that review), in the same transaction.

    reviews.py      open a review, re-attach a retry, requester gone
    eligibility.py  who may vote (pure)
    votes.py        count a vote, decide, expire
    uses.py         standing approvals: windows and approve-once uses
    waiting.py      wait for a decision across processes
    approvers.py    the approver role, from the policy's review rules
"""
from __future__ import annotations

from .approvers import approver_groups, roles_of
from .eligibility import MAX_WINDOW_MINUTES, vote_refusal, voter_refusal, window_refusal
from .errors import AccessRequestNotFound, ReviewNotFound, VoteError, WindowNotFound
from .reviews import create_review, find_pending, held_again, ran, requester_gone, review_url
from .uses import release_use, standing_approval, standing_use
from .votes import expire_reviews, record_refused_vote, vote, voter
from .waiting import SAFETY_INTERVAL, current_status, wait_for_decision, wait_for_decision_sync

__all__ = [
    "MAX_WINDOW_MINUTES", "SAFETY_INTERVAL", "AccessRequestNotFound", "ReviewNotFound", "VoteError",
    "WindowNotFound", "approver_groups", "create_review", "current_status", "expire_reviews", "find_pending",
    "held_again", "ran", "record_refused_vote", "release_use", "requester_gone", "review_url", "roles_of",
    "standing_approval", "standing_use", "vote", "vote_refusal", "voter", "voter_refusal", "wait_for_decision",
    "wait_for_decision_sync", "window_refusal",
]
