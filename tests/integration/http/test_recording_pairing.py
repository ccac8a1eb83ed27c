"""Concurrent exchanges on one HTTP/2 connection: each answer and each decision is shown
with its own request, on the review page and in the session replay.

Several streams of one client connection are in flight at once, so the order in which
a session's events were recorded says nothing about which belong together: the proxy
names the flow on the request, the gate's decision and the answer, and the portal
pairs by it. Pairing by order ("the latest decision before the answer") put one
stream's masked answer on another stream's operation.
"""
from __future__ import annotations

import asyncio
import html as markup
import re
import ssl
import time
import uuid

import httpx
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app.approvals import vote
from app.db import session_scope
from app.models import RecordedSession, SessionEvent, User
from tests.integration.http.test_recording import closed_session
from tests.integration.http.test_reviews import wait_for_review

PASSWORD = "pairing test password"


class _PreferH2(ssl.SSLContext):
    """httpx offers ["http/1.1", "h2"] inside a proxy tunnel, and mitmproxy honours the
    client's order: it would speak HTTP/1.1. Browsers and curl offer h2 first; so does this."""

    def set_alpn_protocols(self, protocols) -> None:
        super().set_alpn_protocols(["h2", *(p for p in protocols if p != "h2")])


def _h2(proxy, token: str) -> httpx.AsyncClient:
    context = _PreferH2(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(proxy.ca))
    return httpx.AsyncClient(http2=True, proxy=proxy.url("agent", token), trust_env=False, timeout=60,
                             verify=context)


async def _until(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def _portal():
    """The portal's test client, signed in as an auditor of its own."""
    from app.portal import create_app

    email = f"pairing-{uuid.uuid4().hex[:8]}@example.com"
    with session_scope() as s:
        s.add(User(email=email, name="Pat Pairing", roles=["auditor"], source="portal",
                   password_hash=generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")))
    client = create_app({"TESTING": True}).test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    return client


def _text(html: str) -> str:
    return markup.unescape(" ".join(re.sub(r"<[^>]+>", " ", html).split()))


def _row(section: str, needle: str) -> str:
    [row] = [r for r in re.findall(r"<tr>.*?</tr>", section, re.S) if needle in r]
    return row


def _article(html: str, needle: str) -> str:
    [found] = [a for a in re.findall(r'<article class="exchange".*?</article>', html, re.S) if needle in a]
    return found


def _order(events: list[tuple[str, dict]], flows: dict[str, str]) -> list[str]:
    """The session's events as "kind name", naming each exchange by its flow."""
    return [f"{kind} {flows.get(data.get('flow'), '?')}" for kind, data in events]


def test_a_masked_answer_is_shown_on_its_own_stream_not_the_latest_decision(proxy, world, agent, api):
    """The slow stream is decided first and answered last, with values masked; the quick
    one, decided in between, had nothing to mask. Its decision is the latest before the
    masked answer, yet only the slow one may be shown as masked."""
    marker = uuid.uuid4().hex[:10]
    run = f"run-pair-{marker}"
    slow_path, quick_path = f"/held-pii/{marker}", f"/cookie/{marker}"
    release = world.upstream.hold(marker)

    async def exchanges():
        async with _h2(proxy, agent) as c:
            h = {"X-Airlock-Run": run}
            slow = asyncio.create_task(c.get(f"{api}{slow_path}", headers=h))
            # Upstream has it: the slow stream is decided and in flight.
            await _until(lambda: world.upstream.requests_to(slow_path), "the slow request reached the upstream")
            quick = await c.get(f"{api}{quick_path}", headers=h)
            release.set()
            slow = await slow
            # A held operation after both: its review page shows them as the run's earlier steps.
            pending = await c.get(f"{api}/quick/{marker}", headers=h)
            return slow, quick, pending

    try:
        slow, quick, pending = asyncio.run(exchanges())
    finally:
        release.set()
    assert slow.http_version == quick.http_version == "HTTP/2"
    assert slow.status_code == quick.status_code == 200
    assert slow.json()["ssn"] == "[REDACTED]" and quick.text == "{}"
    assert pending.status_code == 403 and pending.json()["error"] == "approval_pending", pending.text
    review_id = pending.json()["review_id"]

    row, events = closed_session(run)  # one client connection: one session, every stream in it
    flows = {data["flow"]: name for kind, data in events if kind == "input"
             for name, path in (("slow", slow_path), ("quick", quick_path), ("held", f"/quick/{marker}"))
             if data["url"].endswith(path)}
    assert len(flows) == 3
    # The interleaving under test: the quick stream's decision lies between the slow
    # stream's decision and its masked answer.
    order = _order(events, flows)
    assert order[:6] == ["input slow", "decision slow", "input quick", "decision quick", "output quick",
                         "output slow"], order
    outputs = {flows[data["flow"]]: data for kind, data in events if kind == "output"}
    assert outputs["slow"]["masked"] == 4 and "masked" not in outputs["quick"]

    client = _portal()
    page = client.get(f"/reviews/{review_id}").get_data(as_text=True)
    for section_id in ("run-steps", "history"):
        section = re.search(rf'id="{section_id}".*?</section>', page, re.S).group(0)
        masked, plain = _row(section, slow_path), _row(section, quick_path)
        assert 'data-masked="4"' in masked and "4 values masked" in _text(masked), (section_id, masked)
        assert "masked" not in _text(plain) and "v-allow" in plain, (section_id, plain)

    replay = client.get(f"/sessions/{row.id}").get_data(as_text=True)
    masked, plain = _article(replay, slow_path), _article(replay, quick_path)
    assert ">4 values masked<" in masked
    assert "v-masked" not in plain and "mask rule mask-pii applied, nothing masked" in _text(plain)


def test_each_held_stream_is_shown_with_its_own_decision(proxy, world, agent, api):
    """Two streams held for review at once: both requests are recorded before either
    decision. One is approved (its answer has the injected credential scrubbed: masked),
    the other rejected; the replay shows each exchange with its own verdict."""
    marker = uuid.uuid4().hex[:10]
    run = f"run-pair-{marker}"
    approved_path, rejected_path = f"/many/{marker}-a", f"/deploy/{marker}-r"

    def decide(path: str, decision: str) -> None:
        review = wait_for_review(path)
        with session_scope() as s:
            vote(s, review.id, voter_email="approver@example.com", decision=decision, reason="pairing test")

    async def exchanges():
        async with _h2(proxy, agent) as c:
            h = {"X-Airlock-Run": run}
            approved = asyncio.create_task(c.get(f"{api}{approved_path}", headers=h))
            await asyncio.to_thread(wait_for_review, approved_path)
            rejected = asyncio.create_task(c.get(f"{api}{rejected_path}", headers=h))
            await asyncio.to_thread(wait_for_review, rejected_path)
            await asyncio.to_thread(decide, approved_path, "approve")
            approved = await approved
            await asyncio.to_thread(decide, rejected_path, "reject")
            return approved, await rejected

    approved, rejected = asyncio.run(exchanges())
    assert approved.http_version == rejected.http_version == "HTTP/2"
    assert approved.status_code == 200, approved.text
    assert rejected.status_code == 403 and rejected.json()["error"] == "rejected", rejected.text

    row, events = closed_session(run)
    flows = {data["flow"]: name for kind, data in events if kind == "input"
             for name, path in (("approved", approved_path), ("rejected", rejected_path))
             if data["url"].endswith(path)}
    assert _order(events, flows) == ["input approved", "input rejected", "decision approved", "output approved",
                                     "decision rejected", "output rejected"]

    replay = _portal().get(f"/sessions/{row.id}").get_data(as_text=True)
    # Every event is on one of the two exchanges: no decision is left on a step of its own.
    assert len(re.findall(r'<article class="exchange"', replay)) == 2
    ok, refused = _article(replay, approved_path), _article(replay, rejected_path)
    assert "v-held-allow" in ok and "v-held-deny" not in ok and "data-masked" in ok, ok
    assert "v-held-deny" in refused and "v-held-allow" not in refused and "data-masked" not in refused, refused
    assert "rule deploys-need-approval" in _text(refused) and "rule many-review" in _text(ok)
