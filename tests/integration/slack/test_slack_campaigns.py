"""Access reviews through Slack (the fake Slack Web API): reminder DMs, Certify and Revoke, JIT approval."""
from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from app.campaigns import jobs, lifecycle, requests, runs
from app.campaigns.decisions import take_grant
from app.db import session_scope
from app.models import AccessRequest, Campaign, CampaignItem, Connection, Grant, ServiceAccount, utcnow
from app.versions import bump_version
from tests.integration.slack import scenario as sc


def _dm(fake, settle, channel: str):
    return settle(lambda: next(((c, ts, m) for (c, ts), m in fake.messages.items() if c == channel), None),
                  what=f"a DM in {channel}")


def _buttons(message) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for b in message["blocks"]:
        for e in b.get("elements") or ():
            if "action_id" in e:
                out.setdefault(e["value"], []).append(e["action_id"])
    return out


def _campaign_on_payments() -> int:
    """Two grants on payments-api (owner: alice), a campaign reminding daily; returns its run id."""
    with session_scope() as s:
        conn = s.scalars(select(Connection).where(Connection.name == "payments-api")).one()
        s.add(Grant(service_account=ServiceAccount(name="report-bot"), connection=conn, source="portal"))
        bump_version(s)
        s.add(Campaign(name="payments-review", scope={"connections": ["payments-api"]}, reviewers="owner",
                       schedule="0 9 1 1 *", duration_seconds=8 * 86400, remind_every_seconds=86400))
    with session_scope() as s:
        return runs.start_by_name(s, "payments-review", actor="admin", now=utcnow()).id


def test_reminder_dm_then_revoke_and_certify_from_slack(client, slack_env, settle):
    fake = slack_env
    run_id = _campaign_on_payments()
    with session_scope() as s:
        items = {i.service_account: i.id for i in s.scalars(select(CampaignItem).where(CampaignItem.run_id == run_id))}
        started = s.scalars(select(CampaignItem)).first().run.started_at
        assert lifecycle.remind(s, started + timedelta(hours=23)) == 0  # not yet
    with session_scope() as s:
        assert lifecycle.remind(s, started + timedelta(days=1)) == 1
    channel, ts, message = _dm(fake, settle, "DU_ALICE")
    text = json.dumps(message["blocks"], ensure_ascii=False)
    assert "Reminder: access review payments-review" in text and "report-bot" in text and "revoke" in text
    assert set(_buttons(message)) == {str(items["billing-agent"]), str(items["report-bot"])}

    # Revoke report-bot's grant from the DM: the campaigns service decides, the DM shows the outcome.
    sc.post_payload(client, sc.click({"blocks": [b for b in message["blocks"]
                                                 if b.get("block_id") == f"item-{items['report-bot']}"]},
                                     "airlock.revoke", user="U_ALICE", channel=channel, ts=ts,
                                     response_url=fake.hook_url()) | {"message": {"ts": ts, "blocks": message["blocks"]}})
    fake.wait_for(lambda: str(items["report-bot"]) not in _buttons(fake.messages[(channel, ts)]), what="revoked in the DM")
    with session_scope() as s:
        item = s.get(CampaignItem, items["report-bot"])
        assert item.status == "revoked" and item.decided_by == "alice@example.com" and item.decided_via == "slack"
        assert s.get(Grant, item.grant_id).revoked_at is not None
    assert "Revoked by alice@example.com" in json.dumps(fake.messages[(channel, ts)]["blocks"], ensure_ascii=False)

    # Certify billing-agent: the modal asks why; a blank justification is refused by Slack's form.
    message = fake.messages[(channel, ts)]
    sc.post_payload(client, sc.click(message, "airlock.certify", user="U_ALICE", channel=channel, ts=ts,
                                     trigger_id="trig-c"))
    view = fake.wait_for(lambda: fake.calls_of("views.open"), what="the certify modal")[0].args["view"]
    assert sc.post_payload(client, sc.view_submission(view, {"justification": ""}, user="U_ALICE")
                           ).get_json()["response_action"] == "errors"
    sc.post_payload(client, sc.view_submission(view, {"justification": "pays the invoices"}, user="U_ALICE"))
    fake.wait_for(lambda: _buttons(fake.messages[(channel, ts)]) == {}, what="certified in the DM")
    with session_scope() as s:
        item = s.get(CampaignItem, items["billing-agent"])
        assert item.status == "certified" and item.justification == "pays the invoices"


def test_someone_else_cannot_decide_from_slack(client, slack_env, settle):
    fake = slack_env
    run_id = _campaign_on_payments()
    with session_scope() as s:
        lifecycle.remind(s, utcnow() + timedelta(days=1))
    channel, ts, message = _dm(fake, settle, "DU_ALICE")
    # Bob (linked, not the owner) replays the click with alice's message: refused, nothing changes.
    sc.post_payload(client, sc.click(message, "airlock.revoke", user="U_BOB", channel=channel, ts=ts,
                                     response_url=fake.hook_url()))
    reply = fake.wait_for(lambda: [c.args["text"] for c in fake.calls_of("hook")], what="the refusal")[0]
    assert "is not a reviewer" in reply
    with session_scope() as s:
        assert {i.status for i in s.scalars(select(CampaignItem).where(CampaignItem.run_id == run_id))} == {"pending"}


def test_jit_request_approved_with_the_slack_button(client, slack_env, settle):
    fake = slack_env
    from app.slack import notifier

    with session_scope() as s:
        grant_id = s.scalars(select(Grant.id).join(Grant.connection).where(Connection.name == "payments-api")).one()
        take_grant(s, grant_id, actor="test", reason="setup", now=utcnow())
    with session_scope() as s:
        req = requests.create(s, service_account="billing-agent", connection="payments-api",
                              duration=timedelta(hours=1), reason="refund backlog", requested_by="bob@example.com")
        req_id = req.id

    def posted():
        notifier.tick()
        return next(((c, ts, m) for (c, ts), m in fake.messages.items() if "refund backlog" in json.dumps(m)), None)

    channel, ts, message = settle(posted, what="the request posted for approvers")
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_ALICE", channel=channel, ts=ts))
    settle(lambda: jobs.access_requests_tick()["approved"] or None, what="the request approved")
    with session_scope() as s:
        req = s.get(AccessRequest, req_id)
        assert req.status == "approved" and req.decided_by == "alice@example.com"
        assert s.get(Grant, req.grant_id).expires_at is not None


def test_escalation_dm_reaches_the_escalation_group_who_may_decide(client, slack_env, settle):
    fake = slack_env
    run_id = _campaign_on_payments()
    with session_scope() as s:
        run = s.get(CampaignItem, s.scalars(select(CampaignItem.id).where(CampaignItem.run_id == run_id)).first()).run
        run.campaign.escalate_to = "group:ops"
        deadline = run.deadline
    with session_scope() as s:
        assert lifecycle.escalate(s, deadline - timedelta(days=2, seconds=1)) == 0  # before the last quarter
    with session_scope() as s:
        assert lifecycle.escalate(s, deadline - timedelta(days=2)) == 2
    channel, ts, message = _dm(fake, settle, "DU_BOB")  # bob is in ops
    assert "Escalated: access review payments-review is due soon" in json.dumps(message["blocks"])
    item_id = int(next(iter(_buttons(message))))
    sc.post_payload(client, sc.click(message, "airlock.revoke", user="U_BOB", channel=channel, ts=ts,
                                     response_url=fake.hook_url()))
    fake.wait_for(lambda: str(item_id) not in _buttons(fake.messages[(channel, ts)]), what="revoked by the group")
    with session_scope() as s:
        item = s.get(CampaignItem, item_id)
        assert item.status == "revoked" and item.decided_by == "bob@example.com"
        assert item.reviewer == "group:ops" and item.escalated_from == "alice@example.com"
