"""The one vote-eligibility rule and the approver role (pure: transient rows, no store)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from app.approvals import roles_of, vote_refusal, window_refusal
from app.models import Group, Review, User, Vote, utcnow
from app.policy import Rule
from app.policy.approvers import approver_groups
from tests.unit.gate_fakes import no_store  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_store")


def review(**kw) -> Review:
    now = utcnow()
    fields = dict(id=7, status="pending", service_account="etl-agent", groups=["dba"], slack=True,
                  fingerprint="f", expires_at=now + timedelta(hours=1),
                  details={"requester": {"service_account": "etl-agent", "subject": "etl-client"}})
    fields.update(kw)
    r = Review(**fields)
    r.votes = []
    return r


def user(email="alice@example.com", groups=("dba",), roles=(), active=True, subject=None) -> User:
    return User(email=email, roles=list(roles), active=active, oidc_subject=subject,
                groups=[Group(name=g) for g in groups])


def test_an_approver_in_the_group_may_vote_on_a_pending_review():
    assert vote_refusal(review(), user(), "Alice@Example.com") is None


@pytest.mark.parametrize("r,u,email,why", [
    (review(), user(email="etl-agent"), "etl-agent", "requester cannot vote"),
    (review(), user(subject="ETL-client"), "alice@example.com", "requester cannot vote"),
    (review(), None, "nobody@example.com", "not an active airlock user"),
    (review(), user(active=False), "alice@example.com", "not an active airlock user"),
    (review(), user(groups=("finance",)), "alice@example.com", "not in an approver group"),
    (review(groups=[]), user(), "alice@example.com", "only an admin"),
    (review(status="approved"), user(), "alice@example.com", "is already approved"),
    (review(expires_at=utcnow() - timedelta(seconds=1)), user(), "alice@example.com", "has expired"),
])
def test_every_refusal_says_why(r, u, email, why):
    refusal = vote_refusal(r, u, email)
    assert refusal is not None and why in refusal


def test_admins_decide_reviews_without_groups_and_slack_is_not_a_door_for_portal_only_rules():
    assert vote_refusal(review(groups=[]), user(groups=(), roles=("admin",)), "root@example.com") is None
    portal_only = review(slack=False)
    assert vote_refusal(portal_only, user(), "alice@example.com", via="portal") is None
    assert "not from Slack" in vote_refusal(portal_only, user(), "alice@example.com", via="slack")


def test_a_prior_vote_refuses_another():
    r = review()
    r.votes = [Vote(approver="alice@example.com", decision="approve")]
    assert "already voted approve" in vote_refusal(r, user(), "ALICE@example.com")


def test_window_refusals():
    assert window_refusal(review(), "approve", None) is None
    assert window_refusal(review(), "approve", 60) is None
    assert "only applies to an approval" in window_refusal(review(), "reject", 60)
    assert "1..1440" in window_refusal(review(), "approve", 0)
    assert "no fingerprint" in window_refusal(review(fingerprint=""), "approve", 60)


def test_the_approver_role_comes_from_review_rules():
    rules = [Rule.from_dict({"name": "r1", "match": {"kind": "write"}, "action": "review",
                             "approvers": {"groups": ["dba", "sre"]}}),
             Rule.from_dict({"name": "d", "match": {"kind": "ddl"}, "action": "deny"})]
    groups = approver_groups(rules)
    assert groups == {"dba", "sre"}
    assert roles_of(["auditor", "bogus"], {"sre"}, groups) == {"auditor", "approver"}
    assert roles_of(["admin"], {"finance"}, groups) == {"admin"}
