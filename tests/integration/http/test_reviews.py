"""Held approvals: approved from another process, rejected, pending then retried, and
fifty held flows that do not slow down anybody else."""
from __future__ import annotations

import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import httpx
from sqlalchemy import select

from app.approvals import vote
from app.db import session_scope
from app.models import Review


def _unique() -> str:
    return uuid.uuid4().hex[:10]


def wait_for_review(path_part: str, timeout: float = 15) -> Review:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as s:
            review = s.scalars(select(Review).where(Review.operation.contains(path_part))).first()
            if review is not None:
                return review
        time.sleep(0.05)
    raise AssertionError(f"no review for {path_part}")


def vote_from_another_process(review_id: int, decision: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        from app.db import session_scope
        from app.approvals import vote
        with session_scope() as s:
            vote(s, {review_id}, voter_email="approver@example.com", decision={decision!r}, reason="tested")
    """)
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True,
                          timeout=60)


def in_thread(fn):
    result: dict = {}

    def run():
        start = time.monotonic()
        try:
            result["response"] = fn()
        except Exception as exc:  # surfaced by the assertion on "response"
            result["error"] = exc
        result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_a_held_request_goes_through_once_another_process_approves_it(proxy, world, agent, api):
    path = f"/deploy/approve-{_unique()}"
    thread, result = in_thread(lambda: proxy.requests(agent).post(f"{api}{path}", json={"version": "1.2"}))
    review = wait_for_review(path)
    assert review.status == "pending" and review.rule == "deploys-need-approval"
    assert world.upstream.requests_to(path) == []  # held: nothing forwarded yet
    voted = vote_from_another_process(review.id, "approve")
    assert voted.returncode == 0, voted.stderr
    thread.join(30)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert result["elapsed"] < 20  # woken by the approval, long before the 30 s hold ends
    assert len(world.upstream.requests_to(path)) == 1


def test_a_rejected_request_gets_403_naming_the_review(proxy, world, agent, api):
    path = f"/deploy/reject-{_unique()}"
    thread, result = in_thread(lambda: proxy.httpx(agent).post(f"{api}{path}", json={"version": "2.0"}))
    review = wait_for_review(path)
    assert vote_from_another_process(review.id, "reject").returncode == 0
    thread.join(30)
    response = result["response"]
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "rejected", body
    assert body["review_id"] == review.id and body["review_url"].endswith(f"/reviews/{review.id}")
    assert world.upstream.requests_to(path) == []


def test_pending_then_approved_then_retried(proxy, world, agent, api):
    path = f"/quick/retry-{_unique()}"
    with proxy.requests(agent) as s:
        first = s.put(f"{api}{path}", json={"n": 1})
        assert first.status_code == 403
        body = first.json()
        assert body["error"] == "approval_pending"
        assert body["retry_after"] >= 1 and first.headers["Retry-After"] == str(body["retry_after"])
        assert body["review_url"] == f"http://portal.test/reviews/{body['review_id']}"
        assert world.upstream.requests_to(path) == []
        with session_scope() as db:
            vote(db, body["review_id"], voter_email="approver@example.com", decision="approve")
        retried = s.put(f"{api}{path}", json={"n": 1})
        assert retried.status_code == 200
        # Approved once: the same operation again needs a new approval.
        again = s.put(f"{api}{path}", json={"n": 1})
        assert again.status_code == 403 and again.json()["error"] == "approval_pending"
        assert again.json()["review_id"] != body["review_id"]
    assert len(world.upstream.requests_to(path)) == 1


def test_fifty_held_flows_do_not_slow_an_unrelated_one(proxy, world, agent, api):
    fast = f"{api}/echo/unrelated-{_unique()}"
    run = _unique()
    client = proxy.httpx(agent)

    def latencies(n: int = 60) -> list[float]:
        # Spread over a couple of seconds: held flows re-read their review once a second,
        # and a median taken inside one such burst would say nothing about the rest.
        out = []
        for _ in range(n):
            start = time.perf_counter()
            assert client.get(fast).status_code == 200
            out.append(time.perf_counter() - start)
            time.sleep(0.02)
        return out

    latencies(10)  # warm up the tunnel and caches
    baseline = statistics.median(latencies())

    async def hold_fifty():
        context = ssl.create_default_context(cafile=str(proxy.ca))
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(proxy=proxy.url("agent", agent), verify=context, limits=limits,
                                     timeout=60, trust_env=False) as c:
            return await asyncio.gather(*(c.post(f"{api}/many/{run}/{i}", json={"i": i}) for i in range(50)))

    thread, result = in_thread(lambda: asyncio.run(hold_fifty()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with session_scope() as s:
            held = s.scalars(select(Review.id).where(Review.operation.contains(f"/many/{run}/"),
                                                     Review.status == "pending")).all()
        if len(held) == 50:
            break
        time.sleep(0.1)
    assert len(held) == 50
    during = statistics.median(latencies())
    for review_id in held:
        with session_scope() as s:
            vote(s, review_id, voter_email="approver@example.com", decision="reject")
    thread.join(60)
    client.close()
    responses = result["response"]
    assert [r.status_code for r in responses] == [403] * 50
    assert {r.json()["error"] for r in responses} == {"rejected"}
    assert world.upstream.requests_to(f"/many/{run}/") == []
    print(f"unrelated flow median: {baseline * 1000:.1f} ms alone, {during * 1000:.1f} ms beside 50 held")
    assert during <= 2 * baseline, (during, baseline)


def test_the_review_shows_the_whole_request_headers_body_and_the_agents_reason(proxy, world, agent, api):
    path = f"/deploy/whole-{_unique()}"
    headers = {"X-Airlock-Reason": "rolling out the hotfix, INC-7", "Idempotency-Key": "k-1",
               "X-Api-Key": "sk_live_do_not_show"}
    thread, result = in_thread(lambda: proxy.requests(agent).post(f"{api}{path}?env=prod", headers=headers,
                                                                  json={"version": "1.3", "password": "hunter2"}))
    review = wait_for_review(path)
    details = review.details
    assert details["justification"] == "rolling out the hotfix, INC-7"
    shown = dict(details["headers"])
    assert shown["Idempotency-Key"] == "k-1" and shown["Content-Type"] == "application/json"
    assert "sk_live_do_not_show" not in repr(details) and shown["X-Api-Key"] == "[redacted]"
    assert "Proxy-Authorization" not in shown or shown["Proxy-Authorization"] == "[redacted]"
    assert '"version": "1.3"' in details["body_text"] and "hunter2" not in details["body_text"]
    assert "?env=prod" in review.operation
    assert vote_from_another_process(review.id, "reject").returncode == 0
    thread.join(30)
    assert result["response"].status_code == 403


def test_a_binary_body_is_shown_as_its_size(proxy, world, agent, api):
    path = f"/deploy/binary-{_unique()}"
    payload = bytes(range(256)) * 4
    thread, result = in_thread(lambda: proxy.requests(agent).post(
        f"{api}{path}", data=payload, headers={"Content-Type": "application/octet-stream"}))
    review = wait_for_review(path)
    assert review.details["body_text"] == "binary, 1024 bytes (application/octet-stream)"
    assert vote_from_another_process(review.id, "reject").returncode == 0
    thread.join(30)
    assert result["response"].status_code == 403


def test_the_agents_reason_is_not_forwarded_upstream(proxy, world, agent, api):
    path = f"/echo/reason-{_unique()}"
    response = proxy.requests(agent).get(f"{api}{path}", headers={"X-Airlock-Reason": "just looking"})
    assert response.status_code == 200
    (seen,) = world.upstream.requests_to(path)
    assert "x-airlock-reason" not in {k.lower() for k in dict(seen["headers"])}
