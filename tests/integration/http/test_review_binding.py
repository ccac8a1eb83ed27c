"""An approval covers exactly the request the approver saw (issue 16, findings 1-3), through
the real proxy with real clients: form bodies and query strings are bound, a held
request whose client leaves is withdrawn (nothing upstream, the approval unused), and a
rejection's reason reaches the agent."""
from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
import uuid

from sqlalchemy import select

from app.approvals import vote
from app.db import session_scope
from app.models import AuditEntry, Review

from .test_reviews import in_thread, vote_from_another_process, wait_for_review

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _unique() -> str:
    return uuid.uuid4().hex[:10]


def _approve(review_id: int) -> None:
    with session_scope() as s:
        vote(s, review_id, voter_email="approver@example.com", decision="approve")


def _review(review_id: int) -> Review:
    with session_scope() as s:
        return s.get(Review, review_id)


def test_an_approved_form_body_cannot_be_replayed_with_another_body(proxy, world, agent, api):
    path = f"/quick/pay-{_unique()}"
    with proxy.requests(agent) as s:
        first = s.post(f"{api}{path}", data="amount=1", headers=FORM)
        assert first.status_code == 403 and first.json()["error"] == "approval_pending"
        approved = first.json()["review_id"]
        review = _review(approved)
        assert review.binding and "sha256:" in review.details["body"]  # approvers see the body's digest
        _approve(approved)
        replay = s.post(f"{api}{path}", data="amount=99999&to=attacker", headers=FORM)
        assert replay.status_code == 403 and replay.json()["error"] == "approval_pending"
        assert replay.json()["review_id"] != approved  # a review of its own, not the approved one
        assert world.upstream.requests_to(path) == []
        assert _review(approved).consumed_at is None  # the approval is still there for the real request
        ok = s.post(f"{api}{path}", data="amount=1", headers=FORM)
        assert ok.status_code == 200, ok.text
    seen = world.upstream.requests_to(path)
    assert len(seen) == 1 and seen[0]["body"] == b"amount=1"


def test_an_approved_query_covers_that_query_only(proxy, world, agent, api):
    path = f"/quick/get-{_unique()}"
    with proxy.requests(agent) as s:
        first = s.get(f"{api}{path}?to=alice")
        assert first.status_code == 403
        _approve(first.json()["review_id"])
        other = s.get(f"{api}{path}?to=mallory")
        assert other.status_code == 403 and other.json()["review_id"] != first.json()["review_id"]
        assert s.get(f"{api}{path}?to=alice").status_code == 200
    assert [r["query"] for r in world.upstream.requests_to(path)] == ["to=alice"]


def test_a_same_shape_request_opens_its_own_review(proxy, world, agent, api):
    path = f"/quick/join-{_unique()}"
    with proxy.requests(agent) as s:
        a = s.post(f"{api}{path}", data="amount=1", headers=FORM).json()
        b = s.post(f"{api}{path}", data="amount=2", headers=FORM).json()
        again = s.post(f"{api}{path}", data="amount=1", headers=FORM).json()
    assert a["review_id"] != b["review_id"]
    assert again["review_id"] == a["review_id"]  # an identical retry re-attaches


def test_a_held_chunked_body_is_refused_411(proxy, world, agent, api):
    path = f"/quick/chunked-{_unique()}"
    with proxy.requests(agent) as s:
        # JSON and form bodies are read whole before the gate decides, so only a body the
        # proxy would otherwise stream (here, binary) needs a declared length to be held.
        r = s.post(f"{api}{path}", data=iter([b"\x00amount", b"1"]), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 411 and "Content-Length" in r.json()["message"]
    assert world.upstream.requests_to(path) == []


def test_the_rejection_reason_reaches_the_agent(proxy, world, agent, api):
    path = f"/deploy/reason-{_unique()}"
    thread, result = in_thread(lambda: proxy.httpx(agent).post(f"{api}{path}", json={"version": "3"}))
    review = wait_for_review(path)
    assert vote_from_another_process(review.id, "reject").returncode == 0  # reason="tested"
    thread.join(30)
    body = result["response"].json()
    assert body["error"] == "rejected" and body["reason"] == "tested"
    assert "tested" in body["message"]


def _a_later_approval_goes_through(proxy, world, agent, api) -> None:
    """The positive signal to wait for before asserting that an approval released nothing:
    a request held after that approval, and approved after it, has reached the upstream.
    A flow still waiting on the first approval would have woken to it before the second
    request was even held (every worker follows the store's decisions as they come)."""
    path = f"/deploy/later-{_unique()}"
    thread, result = in_thread(lambda: proxy.httpx(agent).post(f"{api}{path}", json={"version": "later"}))
    _approve(wait_for_review(path).id)
    thread.join(60)
    assert result.get("response") is not None and result["response"].status_code == 200, result
    assert len(world.upstream.requests_to(path)) == 1


def _wait_gone(review_id: int, timeout: float = 15) -> Review:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        review = _review(review_id)
        if review.requester_gone_at is not None:
            return review
        time.sleep(0.05)
    raise AssertionError(f"review {review_id} was not marked requester-gone")


def test_a_held_request_whose_client_left_is_withdrawn_and_its_approval_unused(proxy, world, agent, api):
    path = f"/deploy/gone-{_unique()}"
    curl = subprocess.Popen(
        ["curl", "-sS", "--max-time", "60", "--cacert", str(proxy.ca), "-x", proxy.url("agent", agent),
         "-H", "Content-Type: application/x-www-form-urlencoded", "--data", "version=9", f"{api}{path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        review = wait_for_review(path)
        assert review.requester_gone_at is None
        curl.send_signal(signal.SIGKILL)
        curl.wait(10)
        gone = _wait_gone(review.id)
        assert gone.status == "pending"  # approvers may still approve an identical retry
    finally:
        if curl.poll() is None:
            curl.kill()
    _approve(review.id)
    _a_later_approval_goes_through(proxy, world, agent, api)
    assert world.upstream.requests_to(path) == []
    assert _review(review.id).consumed_at is None
    with session_scope() as s:
        withdrawn = s.scalars(select(AuditEntry).where(AuditEntry.action == "review.withdrawn",
                                                       AuditEntry.target == f"review:{review.id}")).one()
        assert withdrawn.data["reason"] == "the client disconnected"
    # The approval is still there for the agent's identical retry.
    retry = proxy.curl(agent, "-H", "Content-Type: application/x-www-form-urlencoded", "--data", "version=9",
                       f"{api}{path}")
    assert retry.stdout.rsplit("\n", 1)[-1] == "200", retry.stdout
    assert len(world.upstream.requests_to(path)) == 1
    assert _review(review.id).consumed_at is not None


def test_review_used_records_the_request_that_ran(proxy, world, agent, api):
    path = f"/quick/used-{_unique()}"
    with proxy.requests(agent) as s:
        first = s.post(f"{api}{path}?a=1", data="amount=5", headers=FORM).json()
        _approve(first["review_id"])
        assert s.post(f"{api}{path}?a=1", data="amount=5", headers=FORM).status_code == 200
    with session_scope() as s:
        used = s.scalars(select(AuditEntry).where(AuditEntry.action == "review.used",
                                                  AuditEntry.target == f"review:{first['review_id']}")).one()
    assert used.data["operation"].startswith(f"POST {api}{path}?a=1")
    assert "8 bytes" in used.data["body"] and "sha256:" in used.data["body"]
