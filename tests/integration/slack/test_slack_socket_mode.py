"""Socket Mode: the same handler behind slack-sdk's client, against a local fake WebSocket."""
from __future__ import annotations

import pytest

from app.slack import socket_mode
from tests.integration.portal.held import HeldClient, sql_op
from tests.integration.slack import scenario as sc
from tests.integration.slack.fake_socket import FakeSocketMode
from tests.integration.slack.test_slack_votes import _has_buttons, _pending_id, _posted, _votes


@pytest.fixture
def socket_slack(slack_env, monkeypatch):
    ws = FakeSocketMode().start()
    slack_env.ws_url = ws.url
    client = socket_mode.start(sc.APP_TOKEN)
    assert client is not None
    yield ws
    client.close()
    ws.stop()


def test_a_click_over_socket_mode_approves_and_wakes_the_held_operation(slack_env, socket_slack, settle):
    fake, ws = slack_env, socket_slack
    assert [c.token for c in fake.calls_of("apps.connections.open")] == [sc.APP_TOKEN]
    held = HeldClient(sql_op("UPDATE invoices SET paid = true WHERE id = 7"), hold=30).start()
    rid = settle(lambda: _pending_id(), what="the held review")
    channel, ts, message = _posted(fake, settle, rid)
    payload = sc.click(message, "airlock.approve", user="U_DAVE", channel=channel, ts=ts)
    ws.send({"envelope_id": "env-1", "type": "interactive", "accepts_response_payload": False, "payload": payload})
    assert ws.ack_for("env-1") == {"envelope_id": "env-1"}
    verdict = held.wait(20)
    assert verdict is not None and verdict.action == "allow", verdict
    assert _votes(rid) == [("dave@example.com", "approve", None, "slack")]
    settle(lambda: not _has_buttons(fake, channel, ts), what="the message updated")


def test_socket_mode_answers_modals_and_commands_like_http(slack_env, socket_slack, settle):
    fake, ws = slack_env, socket_slack
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    ws.send({"envelope_id": "env-2", "type": "interactive",
             "payload": sc.click(message, "airlock.reject", user="U_DAVE", channel=channel, ts=ts)})
    ws.ack_for("env-2")
    view = fake.wait_for(lambda: fake.calls_of("views.open"), what="the modal")[0].args["view"]
    ws.send({"envelope_id": "env-3", "type": "interactive",
             "payload": sc.view_submission(view, {"reason": " "}, user="U_DAVE")})
    ack = ws.ack_for("env-3")
    assert ack["payload"]["response_action"] == "errors"
    ws.send({"envelope_id": "env-4", "type": "interactive",
             "payload": sc.view_submission(view, {"reason": "wrong table"}, user="U_DAVE")})
    ws.ack_for("env-4")
    settle(lambda: _votes(rid), what="the rejection")
    assert _votes(rid) == [("dave@example.com", "reject", None, "slack")]
    ws.send({"envelope_id": "env-5", "type": "slash_commands",
             "payload": {"command": "/airlock", "text": "whoami", "user_id": "U_DAVE", "team_id": sc.TEAM}})
    assert "dave@example.com" in ws.ack_for("env-5")["payload"]["text"]


def test_the_scheduler_worker_keeps_trying_socket_mode_until_slack_answers(slack_env, monkeypatch):
    from apscheduler.schedulers.background import BackgroundScheduler

    from app.config import settings
    from app.slack import notifier

    fake = slack_env
    ws = FakeSocketMode().start()
    fake.ws_url = ws.url
    fake.fail("apps.connections.open", status=503)  # Slack is down when the scheduler starts
    monkeypatch.setenv("AIRLOCK_SLACK_APP_TOKEN", sc.APP_TOKEN)
    settings.cache_clear()
    scheduler = BackgroundScheduler(timezone="UTC")
    notifier.register_jobs(scheduler)
    scheduler.start()
    try:
        assert ws.connected.wait(15), "Socket Mode never connected"
        assert len(fake.calls_of("apps.connections.open")) == 2
        ws.send({"envelope_id": "env-9", "type": "slash_commands",
                 "payload": {"command": "/airlock", "text": "whoami", "user_id": "U_ALICE", "team_id": sc.TEAM}})
        assert "alice@example.com" in ws.ack_for("env-9")["payload"]["text"]
    finally:
        scheduler.shutdown(wait=True)
        ws.stop()
