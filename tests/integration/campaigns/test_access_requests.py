"""JIT requests and housekeeping over a real store, time driven by `now=`."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app import approvals, audit
from app.campaigns import housekeeping, jobs, requests
from app.campaigns.decisions import take_grant
from app.campaigns.runs import CampaignError
from app.db import session_scope
from app.models import AccessRequest, AuditEntry, Grant, RecordedSession, Review, SessionEvent, Token, utcnow
from tests.integration.campaigns import world as w


@pytest.fixture
def no_grant(store):
    w.build()
    with session_scope() as s:
        take_grant(s, w.grant_id("idle", "db"), actor="test", reason="setup", now=utcnow())
    return utcnow()


def _request(now, **kw):
    with session_scope() as s:
        req = requests.create(s, service_account="idle", connection="db", duration=timedelta(hours=2),
                              reason="incident 4711", requested_by="oncall@example.com", now=now, **kw)
        return req.id, req.review_id


def test_a_pending_request_expires_on_its_own_clock(no_grant):
    now = no_grant
    req_id, review_id = _request(now, pending_for=timedelta(minutes=30))
    assert jobs.access_requests_tick(now=now + timedelta(minutes=29)) == {"approved": 0, "rejected": 0, "expired": 0}
    assert jobs.access_requests_tick(now=now + timedelta(minutes=30))["expired"] == 1
    with session_scope() as s:
        assert s.get(AccessRequest, req_id).status == "expired" and s.get(AccessRequest, req_id).grant_id is None
        assert s.get(Review, review_id).status == "expired"
        with pytest.raises(approvals.VoteError, match="already expired"):
            approvals.vote(s, review_id, voter_email="owner@example.com", decision="approve")


def test_rejection_and_quorum_rules(no_grant):
    now = no_grant
    req_id, review_id = _request(now)
    with session_scope() as s:
        assert s.get(Review, review_id).groups == ["dba"]  # the owner's group decides
        with pytest.raises(approvals.VoteError, match="not in an approver group"):
            approvals.vote(s, review_id, voter_email="other@example.com", decision="approve", now=now)
    with session_scope() as s:
        approvals.vote(s, review_id, voter_email="owner@example.com", decision="reject", reason="use the runbook",
                       now=now)
    assert jobs.access_requests_tick(now=now)["rejected"] == 1
    with session_scope() as s:
        req = s.get(AccessRequest, req_id)
        assert req.status == "rejected" and req.grant_id is None
        assert s.get(Grant, w.grant_id("idle", "db")).revoked_at is not None


def test_approval_makes_a_grant_that_housekeeping_expires(no_grant):
    now = no_grant
    req_id, review_id = _request(now)
    with session_scope() as s:
        approvals.vote(s, review_id, voter_email="owner@example.com", decision="approve", now=now)
    assert jobs.access_requests_tick(now=now)["approved"] == 1
    with session_scope() as s:
        req = s.get(AccessRequest, req_id)
        grant = s.get(Grant, req.grant_id)
        assert grant.active_at(now) and grant.expires_at == now + timedelta(hours=2) and grant.source == "request"
    assert jobs.housekeeping_tick(now=now + timedelta(hours=1))["grants"] == 0
    assert jobs.housekeeping_tick(now=now + timedelta(hours=2))["grants"] == 1
    with session_scope() as s:
        grant = s.get(Grant, req.grant_id)
        assert grant.revoked_at == now + timedelta(hours=2) and grant.revoked_by == "airlock (expiry)"
        assert s.scalars(select(AuditEntry).where(AuditEntry.action == "grant.expired")).first() is not None


def test_bad_requests_are_refused(no_grant):
    with session_scope() as s:
        for kw, msg in ((dict(reason=" "), "needs a reason"), (dict(duration=timedelta(days=30)), "up to 7 days"),
                        (dict(connection="nope"), "unknown connection"), (dict(service_account="reader"),
                                                                           "already has access")):
            args = {**dict(service_account="idle", connection="db", duration=timedelta(hours=1), reason="r",
                           requested_by="x@example.com"), **kw}
            with pytest.raises(CampaignError, match=msg):
                requests.create(s, **args)


def test_expired_tokens_are_marked(store):
    w.build()
    from app.identity import issue_token

    with session_scope() as s:
        issued = issue_token(s, "reader", timedelta(hours=1))
    now = utcnow()
    assert jobs.housekeeping_tick(now=now)["tokens"] == 0
    assert jobs.housekeeping_tick(now=now + timedelta(hours=2))["tokens"] == 1
    with session_scope() as s:
        assert s.get(Token, issued.id).revoked_at is not None


def test_recording_retention_keeps_the_audit_chain_verifiable(store, monkeypatch):
    w.build()
    from app.recording import Recorder

    rec = Recorder(flush_seconds=0.05)
    for sa in ("reader", "writer"):
        session = rec.open(protocol="postgres", connection="db", service_account=sa)
        session.event("output", {"sql": "select 1", "tag": "SELECT"})
        session.close()
    rec.flush()
    with session_scope() as s:
        assert audit.verify(s).ok
        ids = list(s.scalars(select(RecordedSession.id)))
        ended = max(s.scalars(select(RecordedSession.ended_at)))
    assert len(ids) == 2
    monkeypatch.setenv("AIRLOCK_RECORDING_RETENTION", "30d")
    assert jobs.housekeeping_tick(now=ended + timedelta(days=29))["recordings"] == 0
    assert jobs.housekeeping_tick(now=ended + timedelta(days=31))["recordings"] == 2
    with session_scope() as s:
        assert s.scalars(select(RecordedSession)).all() == [] and s.scalars(select(SessionEvent)).all() == []
        result = audit.verify(s)
        assert result.ok, result.reason
        purge = s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.purge")).one()
        assert sorted(purge.data["session_ids"]) == sorted(ids)
        # Deleting a recording any other way still fails verification.
    with session_scope() as s:
        session = Recorder(flush_seconds=0.05)
        r = session.open(protocol="postgres", connection="db", service_account="reader")
        r.event("output", {"sql": "select 2", "tag": "SELECT"})
        r.close()
        session.flush()
    with session_scope() as s:
        sid = s.scalars(select(RecordedSession.id)).one()
        s.execute(SessionEvent.__table__.delete().where(SessionEvent.session_id == sid))
    with session_scope() as s:
        assert not audit.verify(s).ok
    assert housekeeping.retention() == timedelta(days=30)
