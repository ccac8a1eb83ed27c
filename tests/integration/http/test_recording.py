"""Recording: one session per client connection, input/decision/output per exchange,
secrets redacted, masked values recorded masked, run ids, WebSockets."""
from __future__ import annotations

import json
import time
import uuid

from sqlalchemy import select

from app import audit
from app.db import session_scope
from app.models import RecordedSession, SessionEvent
from tests.integration.http.clients import basic, websocket
from tests.integration.http.conftest import UPSTREAM_KEY, UPSTREAM_TOKEN


def closed_session(run_id: str, timeout: float = 10) -> tuple[RecordedSession, list[tuple[str, dict]]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as s:
            row = s.scalars(select(RecordedSession).where(RecordedSession.run_id == run_id)).first()
            if row is not None and row.ended_at is not None:
                events = s.scalars(select(SessionEvent).where(SessionEvent.session_id == row.id)
                                   .order_by(SessionEvent.seq)).all()
                return row, [(e.kind, json.loads(e.data)) for e in events]
        time.sleep(0.1)
    raise AssertionError(f"no closed session tagged {run_id}")


def test_a_client_connection_is_one_sealed_session_of_exchanges(proxy, agent, api):
    run = f"run-{uuid.uuid4().hex[:8]}"
    with proxy.httpx(agent) as c:
        headers = {"X-Airlock-Run": run, "Cookie": "sid=cookie-secret-1", "Authorization": "Bearer runtime-own-1"}
        assert c.get(f"{api}/pii", headers=headers).status_code == 200
        assert c.get(f"{api}/cookie").status_code == 200
        assert c.get(f"{api}/admin/x").status_code == 403
    row, events = closed_session(run)
    assert row.protocol == "http" and row.service_account == "agent" and row.connection == "api"
    assert [kind for kind, _ in events] == ["input", "decision", "output"] * 3
    with session_scope() as s:
        assert audit.verify(s).ok
        sealed = s.get(RecordedSession, row.id)
        assert sealed.digest == audit.recording_digest(s, row.id)

    (pii_in, pii_decision, pii_out), (_, _, cookie_out), (admin_in, admin_decision, admin_out) = (
        [data for _, data in events[i:i + 3]] for i in range(0, 9, 3))
    assert pii_in["method"] == "GET" and pii_in["url"] == f"{api}/pii"
    assert pii_in["headers"]["cookie"] == audit.REDACTED
    assert pii_in["headers"]["authorization"] == audit.REDACTED
    assert "x-airlock-run" not in pii_in["headers"]
    assert pii_decision["action"] == "allow" and pii_decision["masks"] == ["mask-pii"]
    assert pii_out["status"] == 200 and pii_out["masked"] == 4  # email, ssn, the address in note, password
    recorded = json.loads(pii_out["body"]["text"])
    assert recorded["email"] == "[REDACTED:email]" and recorded["ssn"] == "[REDACTED]"
    assert cookie_out["headers"]["set-cookie"] == audit.REDACTED
    assert "masked" not in cookie_out  # mask-pii applied to "{}" and found nothing to mask
    assert admin_in["url"].endswith("/admin/x")
    assert admin_decision["action"] == "deny" and admin_decision["rule"] == "no-admin"
    assert admin_out["status"] == 403 and json.loads(admin_out["body"]["text"])["error"] == "denied"
    everything = json.dumps(events)
    for secret in ("cookie-secret-1", "runtime-own-1", "s3cr3t-value", UPSTREAM_TOKEN, UPSTREAM_KEY, "ann@example.com",
                   "123-45-6789", agent):
        assert secret not in everything


def test_a_run_id_given_on_the_connect_tags_the_session(proxy, agent, api):
    run = f"run-{uuid.uuid4().hex[:8]}"
    out = proxy.curl(agent, "--proxy-header", f"X-Airlock-Run: {run}", f"{api}/echo/connect-run")
    assert out.stdout.endswith("200")
    row, events = closed_session(run)
    assert [kind for kind, _ in events] == ["input", "decision", "output"]


def test_websocket_messages_are_recorded_and_masked(proxy, world, agent):
    run = f"run-{uuid.uuid4().hex[:8]}"
    status, replies = websocket(proxy.port, proxy.ca, "localhost", world.upstream.port, basic("agent", agent),
                                "/ws/chat", ["hello", "from erin@example.com"], headers={"X-Airlock-Run": run})
    assert status == 101
    assert [json.loads(r) for r in replies] == [
        {"echo": "hello", "owner": "[REDACTED:email]"},
        {"echo": "from [REDACTED:email]", "owner": "[REDACTED:email]"},
    ]
    (seen,) = [r for r in world.upstream.requests_to("/ws/chat") if r["method"] == "WEBSOCKET"][-1:]
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert "x-airlock-run" not in seen["headers"]
    row, events = closed_session(run)
    kinds = [kind for kind, _ in events]
    assert kinds[:3] == ["input", "decision", "output"]  # the upgrade request, allowed, 101
    messages = [(kind, data) for kind, data in events if data.get("websocket") is True]
    shown = [(k, d["text"] if k == "input" else json.loads(d["text"])) for k, d in messages]
    assert shown == [
        ("input", "hello"), ("output", {"echo": "hello", "owner": "[REDACTED:email]"}),
        ("input", "from erin@example.com"), ("output", {"echo": "from [REDACTED:email]", "owner": "[REDACTED:email]"}),
    ]
    # Each message from the server counts its own masked values.
    assert [d.get("masked") for _, d in messages] == [None, 1, None, 2]
    assert "dave@example.com" not in json.dumps(events)


def test_a_websocket_is_denied_as_a_whole_by_rules_on_its_upgrade(proxy, world, agent):
    status, replies = websocket(proxy.port, proxy.ca, "localhost", world.upstream.port, basic("agent", agent),
                                "/ws/admin-console", ["rm -rf /"])
    assert status == 403 and replies == []
    assert world.upstream.requests_to("/ws/admin") == []


def test_secret_looking_request_fields_are_redacted_in_the_recording(proxy, agent, api):
    run = f"run-{uuid.uuid4().hex[:8]}"
    with proxy.httpx(agent) as c:
        r = c.post(f"{api}/pii?api_key=qs-secret-123&page=2", headers={"X-Airlock-Run": run},
                   json={"api_token": "body-secret-456", "query": "select 1"})
        assert r.status_code == 200
    _, events = closed_session(run)
    request = events[0][1]
    assert request["url"].endswith("/pii?api_key=[redacted]&page=2")
    assert json.loads(request["body"]["text"]) == {"api_token": audit.REDACTED, "query": "select 1"}
    assert "qs-secret-123" not in json.dumps(events) and "body-secret-456" not in json.dumps(events)


def test_the_output_says_how_many_values_were_masked_whole_streamed_or_held(proxy, agent, api):
    """Whole bodies, streamed text (counted across every chunk, though the recording
    keeps only the start), JSON of unknown length held whole, injected credentials
    echoed back: "masked" is the number of values replaced, and is absent when the
    mask rule (mask-pii covers the whole connection) found nothing."""
    run = f"run-{uuid.uuid4().hex[:8]}"
    with proxy.httpx(agent) as c:
        h = {"X-Airlock-Run": run}
        assert c.get(f"{api}/text-pii", headers=h).text == "write to [REDACTED:email] or call"
        assert c.get(f"{api}/big-text?lines=3000&chunk=997&encoding=gzip", headers=h).status_code == 200
        assert c.get(f"{api}/big-json?rows=50", headers=h).status_code == 200
        assert c.get(f"{api}/cookie", headers=h).status_code == 200  # "{}": nothing to mask
        assert c.get(f"{api}/reflect?form=raw&type=text/plain", headers=h).status_code == 200
    _, events = closed_session(run)
    outputs = [d for kind, d in events if kind == "output"]
    assert len(outputs) == 5
    text, streamed, held, plain, reflected = outputs
    assert text["masked"] == 1
    assert streamed["body"]["streamed"] is True and streamed["masked"] == 3000
    assert held["masked"] == 50 * 4
    assert "masked" not in plain and plain["body"]["text"] == "{}"
    assert reflected["masked"] >= 1 and "[REDACTED:credential]" in reflected["body"]["text"]
    decisions = [d for kind, d in events if kind == "decision"]
    assert all(d["masks"] == ["mask-pii"] for d in decisions)  # the rule applied to all five
