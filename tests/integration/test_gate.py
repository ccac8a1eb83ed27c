"""The gate end to end: real store, real tokens, held operations woken from another process."""
import asyncio
import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app import db
from app.config import settings
from app.db import session_scope
from app.gate import Gate, Unavailable
from app.identity import AuthError, issue_token
from app.inventory import apply_policy
from app.models import AuditEntry, Grant, Review
from app.policy import load_policy
from app.types import Operation

POLICY = (Path(__file__).parent.parent / "data" / "policy.yaml").read_text()
ENV = {"BILLING_TOKEN": "bill-secret", "ORDERS_DB_PASSWORD": "pw"}


@pytest.fixture
def token(store):
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY), actor="test", environ=ENV)
        return issue_token(s, "etl-agent", timedelta(hours=1)).token


def op(sql="select * from orders", kind="read", connection="orders-db", fingerprint=None):
    return Operation(protocol="postgres", connection=connection, kind=kind, text=sql, fingerprint=fingerprint or sql)


def vote_in_another_process(review_id: int, decision: str, voter="alice@example.com", delay=0.3):
    code = textwrap.dedent(f"""
        import time
        time.sleep({delay})
        from app.db import session_scope
        from app.approvals import vote
        with session_scope() as s:
            vote(s, {review_id}, voter_email={voter!r}, decision={decision!r}, reason="from another process")
    """)
    return subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))


async def wait_for_review(timeout=10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as s:
            row = s.scalars(select(Review).where(Review.status == "pending")).first()
            if row:
                return row.id
        await asyncio.sleep(0.05)
    raise AssertionError("no review was created")


def test_allow_mask_and_deny(token):
    async def main():
        gate = Gate()
        who = await gate.authenticate(token, claimed="etl-agent")
        assert who.service_account == "etl-agent" and "etl" in who.groups
        allowed = await gate.decide(who, op())
        assert allowed.action == "allow"
        assert [m.rule for m in allowed.masks] == ["mask-pii"]
        denied = await gate.decide(who, op("drop table orders", kind="ddl"))
        assert (denied.action, denied.rule, denied.status) == ("deny", "no-ddl", "denied")
        assert "DDL is not allowed" in denied.message
        ungranted = await gate.decide(who, op(connection="nowhere"))
        assert ungranted.action == "deny" and ungranted.rule == "no-grant"
        target = await gate.target("orders-db")
        assert target.secrets["password"].reveal() == "pw" and "pw" not in repr(target)

    asyncio.run(main())
    with session_scope() as s:
        actions = [e.action for e in s.scalars(select(AuditEntry))]
    assert actions.count("decision.deny") == 2


def test_bad_credentials_are_refused(token):
    async def main():
        gate = Gate()
        for cred, claimed in [(None, None), ("", None), ("alk_forged", "etl-agent"), (token, "report-bot"), ("garbage", None)]:
            with pytest.raises(AuthError):
                await gate.authenticate(cred, claimed=claimed)

    asyncio.run(main())


def test_held_write_is_approved_from_another_process(token):
    async def main():
        gate = Gate()
        who = await gate.authenticate(token)
        notices = []
        task = asyncio.create_task(gate.decide(who, op("update orders set x = 1 where id = 2", kind="write"), hold=20,
                                               on_hold=lambda rid, url: notices.append((rid, url))))
        review_id = await wait_for_review()
        voter = vote_in_another_process(review_id, "approve")
        started = time.monotonic()
        verdict = await task
        waited = time.monotonic() - started
        assert voter.wait(30) == 0
        assert verdict.action == "allow" and verdict.status == "approved" and verdict.review_id == review_id
        assert notices == [(review_id, f"{settings().public_url}/reviews/{review_id}")]
        assert waited < 10, waited
        # Approve-once: the approval was used by the held operation itself.
        again = await gate.decide(who, op("update orders set x = 1 where id = 2", kind="write"), hold=0.2)
        assert again.action == "review" and again.status == "pending" and again.review_id != review_id

    asyncio.run(main())


def test_rejected_review_denies_and_names_the_review(token):
    async def main():
        gate = Gate()
        who = await gate.authenticate(token)
        task = asyncio.create_task(gate.decide(who, op("delete from orders where id = 1", kind="write"), hold=20))
        review_id = await wait_for_review()
        assert vote_in_another_process(review_id, "reject").wait(30) == 0
        verdict = await task
        assert verdict.action == "deny" and verdict.status == "rejected"
        assert str(review_id) in verdict.message

    asyncio.run(main())


def test_pending_then_retry_after_approval_goes_through(token):
    async def main():
        gate = Gate()
        who = await gate.authenticate(token)
        sql = "insert into orders values (1)"
        pending = await gate.decide(who, op(sql, kind="write"), hold=0.3)
        assert pending.action == "review" and pending.status == "pending"
        assert pending.review_url.endswith(f"/reviews/{pending.review_id}") and pending.retry_after >= 1
        # A retry before the decision re-attaches to the same review.
        again = await gate.decide(who, op(sql, kind="write"), hold=0.2)
        assert again.review_id == pending.review_id
        assert vote_in_another_process(pending.review_id, "approve", delay=0).wait(30) == 0
        retried = await gate.decide(who, op(sql, kind="write"), hold=0.2)
        assert retried.action == "allow"

    asyncio.run(main())


def test_revoked_grant_stops_working_within_a_second(token):
    async def main():
        gate = Gate()
        who = await gate.authenticate(token)
        assert (await gate.decide(who, op())).action == "allow"
        from app.versions import bump_version
        from app.models import utcnow

        with session_scope() as s:
            s.execute(update(Grant).values(revoked_at=utcnow()))
            bump_version(s)
        await asyncio.sleep(1.0)
        verdict = await gate.decide(who, op())
        assert verdict.action == "deny" and verdict.rule == "no-grant"

    asyncio.run(main())


def test_gate_fails_closed_when_the_store_is_gone(token, monkeypatch):
    async def main():
        gate = Gate(version_ttl=0)
        who = await gate.authenticate(token)
        assert (await gate.decide(who, op())).action == "allow"
        monkeypatch.setenv("AIRLOCK_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:9/nowhere")
        settings.cache_clear()
        db.reset_engines()
        verdict = await gate.decide(who, op())
        assert verdict.action == "deny" and verdict.status == "error"
        with pytest.raises((Unavailable, AuthError)):
            await gate.authenticate(token)

    asyncio.run(main())


def test_stamp_holds_while_the_policy_version_stands_and_changes_with_it(token):
    async def main():
        gate = Gate(version_ttl=0.2)
        assert gate.stamp() is None  # nothing read from the store yet
        who = await gate.authenticate(token, claimed="etl-agent")
        first = gate.stamp()
        assert first is not None and gate.stamp() == first
        assert gate.shares_verdict(who, op())  # the file's rules match on tables and kinds, not text
        await asyncio.sleep(0.25)
        assert gate.stamp() is None  # the version check is due: callers must ask the gate again
        with session_scope() as s:
            apply_policy(s, load_policy(POLICY.replace("DDL is not allowed", "No DDL here")), actor="test",
                         environ=ENV)
        await gate.decide(who, op())
        assert gate.stamp() is not None and gate.stamp()[0] != first[0]

    asyncio.run(main())
