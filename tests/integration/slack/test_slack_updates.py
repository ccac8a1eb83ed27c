"""Messages stay true: decisions made in the portal, by expiry, or while a click was in flight."""
from __future__ import annotations

import json
import re
from datetime import timedelta

from sqlalchemy import update

from app.db import session_scope
from app.models import Review, utcnow
from app.scheduler import expire_reviews_job
from tests.integration.portal.held import HeldClient, sql_op
from tests.integration.slack import scenario as sc
from tests.integration.slack.test_slack_votes import _has_buttons, _posted, _shown, _votes

UPDATE = "UPDATE invoices SET paid = true WHERE id = 7"


def _login(client, email: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"email": email, "password": sc.PASSWORD, "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]


def _csrf(client, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def test_a_portal_approval_updates_the_slack_message(app, slack_env, settle):
    fake = slack_env
    held = HeldClient(sql_op(UPDATE), hold=30).start()
    rid = settle(lambda: _review_id(), what="the held review")
    channel, ts, _ = _posted(fake, settle, rid)
    portal = app.test_client()
    _login(portal, "alice@example.com")
    resp = portal.post(f"/reviews/{rid}/vote", data={"action": "approve", "csrf_token": _csrf(portal, f"/reviews/{rid}")})
    assert resp.status_code == 302
    verdict = held.wait(20)
    assert verdict is not None and verdict.action == "allow"
    settle(lambda: not _has_buttons(fake, channel, ts), what="the message updated")
    shown = _shown(fake, channel, ts)
    # Alice is linked to Slack, so she is mentioned; the vote came from the portal.
    assert "✅ *Approved* by <@U_ALICE>" in shown and "(via portal)" in shown
    updates = [c for c in fake.calls_of("chat.update") if c.args["ts"] == ts]
    assert updates and updates[-1].args["channel"] == channel


def _review_id() -> int | None:
    from sqlalchemy import select

    with session_scope() as s:
        return s.scalar(select(Review.id).order_by(Review.id.desc()))


def test_expiry_updates_the_slack_message(slack_env, settle):
    fake = slack_env
    rid = sc.open_review()
    channel, ts, _ = _posted(fake, settle, rid)
    with session_scope() as s:
        s.execute(update(Review).where(Review.id == rid).values(expires_at=utcnow() - timedelta(seconds=1)))
    expire_reviews_job()  # the scheduler's job
    with session_scope() as s:
        assert s.get(Review, rid).status == "expired"
    settle(lambda: not _has_buttons(fake, channel, ts), what="the message updated")
    shown = _shown(fake, channel, ts)
    assert "⌛ *Expired*" in shown and "nobody decided in time" in shown
    assert "Time left" not in shown


def test_a_partial_approval_shows_progress_and_keeps_the_buttons(app, slack_env, settle):
    from app.types import Operation

    fake = slack_env
    op = Operation(protocol="postgres", connection="billing-db", kind="write", text="DELETE FROM ledger WHERE id = 1",
                   targets=("ledger",), fingerprint="fp:ledger")
    rid = sc.open_review(op)
    channel, ts, _ = _posted(fake, settle, rid)
    assert "0 of 2" in _shown(fake, channel, ts)
    portal = app.test_client()
    _login(portal, "alice@example.com")
    portal.post(f"/reviews/{rid}/vote", data={"action": "approve", "csrf_token": _csrf(portal, f"/reviews/{rid}")})
    settle(lambda: "1 of 2" in _shown(fake, channel, ts), what="progress shown")
    assert _has_buttons(fake, channel, ts)
    assert "<@U_ALICE> approved via portal" in _shown(fake, channel, ts)


def test_a_click_on_a_review_decided_elsewhere_is_refused_and_the_message_corrected(app, client, slack_env, settle):
    fake = slack_env
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    portal = app.test_client()
    _login(portal, "alice@example.com")
    portal.post(f"/reviews/{rid}/vote", data={"action": "reject", "reason": "no",
                                              "csrf_token": _csrf(portal, f"/reviews/{rid}")})
    # Dave still sees the old message and clicks Approve before any update reached Slack.
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_DAVE", channel=channel, ts=ts,
                                     response_url=fake.hook_url()))
    text = fake.wait_for(lambda: [c.args["text"] for c in fake.calls_of("hook")], what="the reply")[0]
    assert "already rejected" in text
    assert _votes(rid) == [("alice@example.com", "reject", None, "portal")]
    fake.wait_for(lambda: not _has_buttons(fake, channel, ts), what="the message corrected")
    assert "⛔ *Rejected*" in json.dumps(fake.messages[(channel, ts)]["blocks"], ensure_ascii=False)
