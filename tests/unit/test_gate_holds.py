"""Held operations with in-memory fakes: approve, reject, pending, withdrawn, used up (no database)."""
from __future__ import annotations

import asyncio

import pytest

from app.gate import Gate, review_fingerprint
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
    """Start a decision and return (task, review id) once the gate holds it."""
    seen: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(gate.decide(WHO, WRITE, on_hold=lambda rid, url: seen.set_result((rid, url)), **kw))
    review_id, url = await asyncio.wait_for(seen, 5)
    assert url == f"http://portal.test/reviews/{review_id}"
    return task, review_id


def test_approved_in_time_goes_through_once_and_a_replay_is_held_again():
    async def main():
        s = store()
        gate = build(s)
        task, rid = await held(gate)
        s.decide(rid, "approved")
        verdict = await task
        assert (verdict.action, verdict.review_id) == ("allow", rid)
        assert s.reviews[rid].used
        again, rid2 = await held(gate, hold=0.01)
        assert rid2 != rid  # the approval was used up: a new review
        pending = await again
        assert (pending.action, pending.status, pending.review_id) == ("review", "pending", rid2)
        assert pending.retry_after == 1

    asyncio.run(main())


def test_rejected_names_the_review_and_the_reason():
    async def main():
        s = store()
        gate = build(s)
        rec = FakeRecording()
        task, rid = await held(gate, recording=rec)
        s.decide(rid, "rejected", "not today")
        verdict = await task
        assert (verdict.action, verdict.status, verdict.reason) == ("deny", "rejected", "not today")
        assert verdict.message == f"review {rid} was rejected: not today"
        assert rec.events[-1][1]["review_id"] == rid and rec.events[-1][1]["reason"] == "not today"

    asyncio.run(main())


def test_a_runtime_that_leaves_while_held_withdraws_and_nothing_is_used():
    async def main():
        s = store()
        gate = build(s)
        gone = asyncio.get_running_loop().create_future()
        task, rid = await held(gate, gone=gone)
        gone.set_result("the client disconnected")
        verdict = await task
        assert (verdict.action, verdict.status) == ("deny", "withdrawn")
        assert "the client disconnected" in verdict.message
        assert s.reviews[rid].gone == "the client disconnected" and not s.reviews[rid].used

    asyncio.run(main())


def test_an_identical_retry_reattaches_to_the_open_review_and_a_window_lets_the_shape_pass():
    async def main():
        s = store()
        gate = build(s)
        first = await gate.decide(WHO, WRITE, hold=0.01)
        second = await gate.decide(WHO, WRITE, hold=0.01)
        assert first.review_id == second.review_id and len(s.reviews) == 1
        s.windows.append(("etl-agent", "db", review_fingerprint(WRITE), "payroll-review"))
        other = Operation("postgres", "db", "write", text="update payroll set x = 2", targets=("payroll",),
                          fingerprint="update payroll set x = ?")
        verdict = await gate.decide(WHO, other)
        assert (verdict.action, verdict.status) == ("allow", "approved")
        assert len(s.reviews) == 1  # no review for it

    asyncio.run(main())


def test_defer_review_answers_at_once_without_a_review():
    async def main():
        s = store()
        verdict = await build(s).decide(WHO, WRITE, defer_review=True)
        assert (verdict.action, verdict.status) == ("review", "deferred") and s.reviews == {}

    asyncio.run(main())


def test_give_back_returns_an_approve_once_use():
    async def main():
        s = store()
        gate = build(s)
        task, rid = await held(gate)
        s.decide(rid, "approved")
        verdict = await task
        assert s.reviews[rid].used
        await gate.give_back(verdict, "client left")
        assert not s.reviews[rid].used
        assert (await gate.decide(WHO, WRITE)).action == "allow"  # an identical retry uses it

    asyncio.run(main())


def test_the_store_failing_during_a_hold_refuses_but_keeps_the_review_id():
    async def main():
        s = store()
        gate = build(s)
        task, rid = await held(gate)
        s.fail = OSError("gone")
        s.decide(rid, "approved")
        verdict = await task
        assert (verdict.action, verdict.status, verdict.review_id) == ("deny", "error", rid)
        assert verdict.retry_after and verdict.review_url.endswith(f"/reviews/{rid}")

    asyncio.run(main())


def test_the_guard_catches_a_gate_that_reaches_for_the_real_store(no_store):
    async def main():
        return await Gate().decide(WHO, WRITE)  # the default store: SQLAlchemy

    verdict = asyncio.run(main())
    assert (verdict.action, verdict.status) == ("deny", "error")  # fails closed
    assert no_store == ["store"]
    no_store.clear()  # caught as it should be: the fixture's own check passes
