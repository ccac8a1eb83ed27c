"""Who may vote on a review (pure: decides on the rows it is given, reads nothing).

`vote_refusal` is the one eligibility rule: `vote` enforces it, and the portal's
buttons and badge, Slack and the API ask it before anyone clicks. Showing buttons to
someone the vote would refuse is a lie.
"""
from __future__ import annotations

from datetime import datetime

from app.models import Review, User, utcnow

MAX_WINDOW_MINUTES = 1440


def _requester_ids(review: Review) -> set[str]:
    req = review.details.get("requester") or {}
    ids = {review.service_account, req.get("service_account"), req.get("subject")}
    return {str(i).strip().lower() for i in ids if i}


def vote_refusal(review: Review, user: User | None, email: str, *, via: str = "portal",
                 now: datetime | None = None) -> str | None:
    """Why `email` (the airlock user `user`, None if there is none) may not vote on
    `review` through `via` (portal, api, slack) now, or None when they may."""
    email = (email or "").strip().lower()
    prior = next((v for v in review.votes if v.approver.lower() == email), None)
    if prior is not None:
        return f"{email} has already voted {prior.decision} on review {review.id}"
    if review.status != "pending":
        return f"review {review.id} is already {review.status}"
    if via == "slack" and not review.slack:
        # The rule wants the portal's stronger sign-in: Slack is not a door for it.
        return "this rule must be approved in the portal, not from Slack"
    if review.expires_at <= (now or utcnow()):
        return f"review {review.id} has expired"
    return voter_refusal(review, user, email)


def voter_refusal(review: Review, user: User | None, email: str) -> str | None:
    """The part of `vote_refusal` that is about the person: not the requester, an active
    user, in an approver group of the review (or an admin when it names none)."""
    email = (email or "").strip().lower()
    requester = _requester_ids(review)
    if email in requester:
        return "the requester cannot vote on its own review"
    if user is None or not user.active:
        return f"{email} is not an active airlock user"
    if user.oidc_subject and user.oidc_subject.lower() in requester:
        return "the requester cannot vote on its own review"
    if review.groups:
        if not user.group_names & set(review.groups):
            return f"{email} is not in an approver group of this review ({', '.join(review.groups)})"
    elif "admin" not in (user.roles or []):
        # A rule that names no approver group is approved by admins only (fail closed).
        return "only an admin may decide a review without approver groups"
    return None


def window_refusal(review: Review, decision: str, window_minutes: int | None) -> str | None:
    """Why an approval window cannot be given with this vote, or None."""
    if window_minutes is None:
        return None
    if decision != "approve":
        return "an approval window only applies to an approval"
    if not 1 <= int(window_minutes) <= MAX_WINDOW_MINUTES:
        return f"the approval window must be 1..{MAX_WINDOW_MINUTES} minutes"
    if not review.fingerprint:
        return "this operation has no fingerprint; approve it once instead"
    return None
