"""A held operation whose grant goes while it waits (revoked, in the same process or one
the gate has not heard from yet) is refused with the no-grant rule, naming the
revocation; the approval is never used and nothing runs. No database."""
from __future__ import annotations

import asyncio

import pytest

from app.gate import Gate
from app.types import Operation, Principal
from tests.unit.gate_fakes import FakeRecording, FakeStore, build, no_store, rule  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_store")

WHO = Principal("etl-agent")
WRITE = Operation("postgres", "db", "write", text="update payroll set x = 1", targets=("payroll",),
                  fingerprint="update payroll set x = ?")


def store() -> FakeStore:
    return FakeStore([rule("payroll-review", "review", kind=["write"], extra={"approvers": {"groups": ["dba"]}})],
                     [("etl-agent", "db")])


async def held(gate: Gate, **kw):
    seen: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(gate.decide(WHO, WRITE, on_hold=lambda rid, url: seen.set_result(rid), **kw))
    return task, await asyncio.wait_for(seen, 5)


def assert_revoked_refusal(verdict, rid: int) -> None:
    assert (verdict.action, verdict.status, verdict.rule) == ("deny", "denied", "no-grant")
    assert verdict.review_id is None  # adapters would show it as the review's outcome
    assert "'etl-agent' has no grant for connection 'db': it was revoked at" in verdict.message
    assert f"held for review {rid} (http://portal.test/reviews/{rid}), which was not used: nothing ran" \
        in verdict.message


def test_a_revoke_while_held_refuses_at_once_without_waiting_for_approvers():
    async def main():
        s = store()
        gate = build(s)
        rec = FakeRecording()
        task, rid = await held(gate, recording=rec, hold=30)
        s.revoke("etl-agent", "db")
        verdict = await asyncio.wait_for(task, 5)  # long before the 30 s hold ends
        assert_revoked_refusal(verdict, rid)
        assert not s.reviews[rid].used and "it was revoked at" in s.reviews[rid].gone
        assert rec.events[-1][1]["rule"] == "no-grant"
        s.decide(rid, "approved")  # a late approval: the next try is refused by the grant
        again = await gate.decide(WHO, WRITE)
        assert (again.action, again.rule) == ("deny", "no-grant") and "it was revoked at" in again.message
        assert not s.reviews[rid].used

    asyncio.run(main())


def test_an_approval_after_a_revoke_the_gate_has_not_heard_of_is_not_used():
    async def main():
        s = store()
        gate = build(s, version_ttl=3600)  # the snapshot would be trusted for an hour
        task, rid = await held(gate, hold=30)
        s.revoke("etl-agent", "db", tell=False)  # no bus hint: the hold's own looks still see the grant
        s.decide(rid, "approved")  # only the look at the store version on waking finds it gone
        verdict = await asyncio.wait_for(task, 5)
        assert_revoked_refusal(verdict, rid)
        assert not s.reviews[rid].used

    asyncio.run(main())


def test_an_approval_under_a_standing_grant_still_goes_through():
    async def main():
        s = store()
        gate = build(s)
        task, rid = await held(gate, hold=30)
        s.decide(rid, "approved")
        verdict = await asyncio.wait_for(task, 5)
        assert (verdict.action, verdict.review_id) == ("allow", rid) and s.reviews[rid].used

    asyncio.run(main())


def test_a_runtime_that_leaves_is_still_withdrawn_not_revoked():
    async def main():
        s = store()
        gate = build(s)
        gone = asyncio.get_running_loop().create_future()
        task, rid = await held(gate, gone=gone, hold=30)
        gone.set_result("the client disconnected")
        verdict = await asyncio.wait_for(task, 5)
        assert (verdict.action, verdict.status) == ("deny", "withdrawn")
        assert s.reviews[rid].gone == "the client disconnected"

    asyncio.run(main())


def test_a_store_failure_while_looking_at_the_grant_fails_closed():
    async def main():
        s = store()
        gate = build(s, version_ttl=3600)
        task, rid = await held(gate, hold=30)
        s.fail = RuntimeError("store down")
        s.decide(rid, "approved")
        verdict = await asyncio.wait_for(task, 5)
        assert verdict.action == "deny" and verdict.status == "error" and verdict.review_id == rid

    asyncio.run(main())


def test_a_hold_that_is_cancelled_leaves_no_grant_watcher_behind():
    async def main():
        s = store()
        gate = build(s)
        task, _ = await held(gate, hold=30)
        assert any(t.get_coro().__name__ == "_watch_grant" for t in asyncio.all_tasks())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert not [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_watch_grant"]

    asyncio.run(main())
