"""Every request to /slack/* is Slack's own: signatures on the raw body, fresh timestamps, audited refusals."""
from __future__ import annotations

import json
import time
from urllib.parse import quote, urlencode

from sqlalchemy import func, select

from app.config import settings
from app.db import session_scope
from app.models import AuditEntry, Vote
from app.slack import client as slack_client
from app.slack import signing
from tests.integration.slack import scenario as sc
from tests.integration.slack.conftest import background_idle
from tests.integration.slack.test_slack_votes import _posted, _votes


def _refusals() -> list[AuditEntry]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == "slack.request_refused")
                              .order_by(AuditEntry.seq)))


def _approve_payload(fake, settle) -> tuple[int, dict]:
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    return rid, sc.click(message, "airlock.approve", user="U_DAVE", channel=channel, ts=ts)


def test_a_forged_signature_is_refused_and_audited(client, slack_env, settle):
    rid, payload = _approve_payload(slack_env, settle)
    resp = sc.post_payload(client, payload, secret="not-the-secret")
    assert resp.status_code == 401
    entry = _refusals()[-1]
    assert entry.data["reason"] == "bad signature" and entry.target == "/slack/actions"
    background_idle()  # whatever the refused request set going has ended
    assert _votes(rid) == []
    # The same payload, signed with the real secret, goes through: the refusal was the signature.
    assert sc.post_payload(client, payload).status_code == 200
    settle(lambda: _votes(rid), what="the genuine vote")


def test_a_replayed_request_with_an_old_timestamp_is_refused(client, slack_env, settle):
    rid, payload = _approve_payload(slack_env, settle)
    old = int(time.time()) - 6 * 60  # correctly signed, but 6 minutes old
    resp = sc.post_payload(client, payload, ts=old)
    assert resp.status_code == 401
    assert _refusals()[-1].data["reason"].startswith("timestamp outside 5 minutes")
    background_idle()  # whatever the refused request set going has ended
    assert _votes(rid) == []


def test_a_tampered_body_or_missing_headers_are_refused(client, slack_env, settle):
    rid, payload = _approve_payload(slack_env, settle)
    body = urlencode({"payload": json.dumps(payload)}).encode()
    other = urlencode({"payload": json.dumps({**payload, "user": {"id": "U_ALICE", "team_id": sc.TEAM}})}).encode()
    resp = client.post("/slack/actions", data=other, headers=sc.signed(body),
                       content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 401
    resp = client.post("/slack/actions", data=body, content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 401
    resp = client.post("/slack/commands", data=b"command=%2Fairlock&text=link&user_id=U_X",
                       headers=sc.signed(b"something else"), content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 401
    reasons = [e.data["reason"] for e in _refusals()]
    assert reasons == ["bad signature", "missing signature headers", "bad signature"]
    assert _refusals()[-1].target == "/slack/commands"


def test_signatures_are_checked_on_the_raw_body(client, slack_env, settle):
    """A reason with '+', '%' and non-ASCII: re-encoding the parsed form would not verify."""
    fake = slack_env
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.reject", user="U_DAVE", channel=channel, ts=ts))
    view = fake.wait_for(lambda: fake.calls_of("views.open"), what="the modal")[0].args["view"]
    reason = "month-end: 100% frozen + see ticket #4 — ünïcode"
    # Spaces as %20 and brackets, quotes, colons left bare: valid form encoding, but not
    # what urlencode() would produce from the parsed fields.
    text = json.dumps(sc.view_submission(view, {"reason": reason}, user="U_DAVE"), ensure_ascii=False)
    raw = ("payload=" + quote(text, safe='{}":,[]')).encode()
    assert raw != urlencode({"payload": text}).encode()
    resp = client.post("/slack/actions", data=raw, headers=sc.signed(raw), content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 200
    settle(lambda: _votes(rid), what="the rejection")
    from app.models import Review

    with session_scope() as s:
        assert s.get(Review, rid).reason == reason


def test_without_a_signing_secret_the_endpoints_do_not_exist(client, slack_env, monkeypatch, settle):
    rid, payload = _approve_payload(slack_env, settle)
    monkeypatch.delenv("AIRLOCK_SLACK_SIGNING_SECRET")
    settings.cache_clear()
    assert sc.post_payload(client, payload).status_code == 404
    assert sc.post_command(client, "whoami", user="U_DAVE").status_code == 404
    assert _refusals() == []
    background_idle()
    assert _votes(rid) == []


def test_refusal_audit_entries_are_rate_limited(client, slack_env, settle):
    body = b"payload=%7B%7D"
    for _ in range(signing.AUDIT_BURST + 5):
        resp = client.post("/slack/actions", data=body, headers=sc.signed(body, secret="wrong"),
                           content_type="application/x-www-form-urlencoded")
        assert resp.status_code == 401
    assert len(_refusals()) == signing.AUDIT_BURST
    signing._window["start"] = 0.0  # a new window: the next entry reports what was suppressed
    client.post("/slack/actions", data=body, headers=sc.signed(body, secret="wrong"),
                content_type="application/x-www-form-urlencoded")
    assert _refusals()[-1].data["suppressed_since_last"] == 5


def test_the_endpoint_acknowledges_at_once_even_when_slack_is_slow(client, slack_env, settle, monkeypatch):
    fake = slack_env
    monkeypatch.setattr(slack_client, "CALL_TIMEOUT", 1.0)
    fake.add_user("U_ERIN", "erin@example.com")
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    fake.fail("users.info", status=200, delay=4.0)  # Slack hangs on the profile lookup
    started = time.monotonic()
    resp = sc.post_payload(client, sc.click(message, "airlock.approve", user="U_ERIN", channel=channel, ts=ts,
                                            response_url=fake.hook_url()))
    elapsed = time.monotonic() - started
    assert resp.status_code == 200 and elapsed < 1.0, elapsed
    text = fake.wait_for(lambda: [c.args["text"] for c in fake.calls_of("hook")], timeout=15, what="the reply")[0]
    assert "could not check your Slack profile" in text
    with session_scope() as s:
        assert s.scalar(select(func.count(Vote.id))) == 0
