"""Who gets buttons, and what an ineligible clicker is told (approvals.vote_refusal).

A channel message shows its buttons to everyone in the channel (Slack cannot show
buttons to some readers only): a click from someone who may not vote gets an ephemeral
reply saying why, Reject included, before any form opens (a non-member's Reject is in
test_slack_votes.py). A review sent to one person
(a rule's `channel: "email:..."` or a Slack user id) shows buttons only when that person
may vote, and otherwise says why not.
"""
from __future__ import annotations

import json

from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry, Vote
from tests.integration.portal.held import http_op, sql_op
from tests.integration.slack import scenario as sc

UPDATE = "UPDATE invoices SET paid = true WHERE id = 9"

DM_RULES = """  - name: patch-customers-to-dave
    match: {protocol: http, method: [PATCH], path: "/v1/customers/*"}
    action: review
    approvers: {groups: [dba]}
    channel: "email:dave@example.com"
  - name: patch-charges-to-bob
    match: {protocol: http, method: [PATCH], path: "/v1/charges/*"}
    action: review
    approvers: {groups: [dba]}
    channel: "email:bob@example.com"
  - name: patch-cards-to-bob-by-id
    match: {protocol: http, method: [PATCH], path: "/v1/cards/*"}
    action: review
    approvers: {groups: [dba]}
    channel: "U_BOB"
"""


def _message_in(fake, settle, channel: str, rid: int) -> dict:
    def find():
        for (ch, _ts), msg in list(fake.messages.items()):
            if ch == channel and f"Review #{rid} " in json.dumps(msg["blocks"], ensure_ascii=False):
                return msg
        return None

    return settle(find, what=f"review {rid} in {channel}")


def _posted(fake, settle, rid: int) -> tuple[str, str, dict]:
    def find():
        for (channel, ts), msg in list(fake.messages.items()):
            if f"Review #{rid} " in json.dumps(msg["blocks"], ensure_ascii=False):
                return channel, ts, msg
        return None

    return settle(find, what=f"review {rid} posted")


def _buttons(msg: dict) -> list[str]:
    return [e["action_id"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]


def _refusals(rid: int) -> list[AuditEntry]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == "slack.vote_refused",
                                                      AuditEntry.target == f"review:{rid}")))


def _votes(rid: int) -> int:
    with session_scope() as s:
        return len(s.scalars(select(Vote).where(Vote.review_id == rid)).all())


def test_a_dm_shows_buttons_only_to_an_approver_who_may_vote(slack_env, settle):
    fake = slack_env
    fake.add_user("U_DAVE", "dave@example.com")
    fake.add_user("U_BOB", "bob@example.com")
    sc.seed(sc.POLICY.replace("rules:\n", "rules:\n" + DM_RULES, 1))
    dave = sc.open_review(http_op("PATCH", "/v1/customers/cus_1"))
    bob = sc.open_review(http_op("PATCH", "/v1/charges/ch_1"))
    bob_by_id = sc.open_review(http_op("PATCH", "/v1/cards/card_1"))

    to_dave = _message_in(fake, settle, "DU_DAVE", dave)
    assert _buttons(to_dave)[0] == "airlock.approve" and "airlock.reject" in _buttons(to_dave)
    assert "cannot vote" not in json.dumps(to_dave["blocks"])

    for rid in (bob, bob_by_id):
        to_bob = _message_in(fake, settle, "DU_BOB", rid)
        shown = json.dumps(to_bob["blocks"], ensure_ascii=False)
        assert _buttons(to_bob) == []
        assert ("You cannot vote on this review:* bob@example.com is not in an approver group of this review (dba)"
                in shown)
        assert f"Open review #{rid} in the airlock portal" in shown  # the portal stays one click away


def test_a_dm_to_the_requester_has_no_buttons(slack_env, settle):
    fake = slack_env
    fake.add_user("U_DAVE", "dave@example.com")
    sc.seed(sc.POLICY.replace("rules:\n", "rules:\n" + DM_RULES, 1))
    rid = sc.open_review(http_op("PATCH", "/v1/customers/cus_2"), subject="dave@example.com")
    msg = _message_in(fake, settle, "DU_DAVE", rid)
    assert _buttons(msg) == []
    assert "the requester cannot vote on its own review" in json.dumps(msg["blocks"])


def test_reject_from_the_requester_is_refused_before_the_form_opens(client, slack_env, settle):
    fake = slack_env
    rid = sc.open_review(sql_op(UPDATE), subject="dave@example.com")
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.reject", user="U_DAVE", channel=channel, ts=ts))
    call = fake.wait_for(lambda: fake.calls_of("chat.postEphemeral"), what="chat.postEphemeral")[0]
    assert (call.args["channel"], call.args["user"]) == (channel, "U_DAVE")
    assert call.args["text"] == f"You cannot reject review #{rid}: the requester cannot vote on its own review"
    assert fake.calls_of("views.open") == []
    assert _votes(rid) == 0


def test_an_eligible_approver_still_gets_the_reject_form(client, slack_env, settle):
    fake = slack_env
    rid = sc.open_review(sql_op(UPDATE))
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.reject", user="U_ALICE", channel=channel, ts=ts,
                                     response_url=fake.hook_url(), trigger_id="trig-alice"))
    opened = fake.wait_for(lambda: fake.calls_of("views.open"), what="views.open")[0]
    assert opened.args["trigger_id"] == "trig-alice" and f"#{rid}" in opened.args["view"]["title"]["text"]
    assert fake.calls_of("hook") == [] and _refusals(rid) == []
