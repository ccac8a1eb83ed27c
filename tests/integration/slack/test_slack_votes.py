"""Votes from Slack buttons: signed block_actions on the real endpoint, through approvals.vote."""
from __future__ import annotations

import json
import time

from sqlalchemy import select

from app.db import session_scope
from app.models import AuditEntry, FingerprintApproval, Review, User, Vote
from app.types import Operation
from tests.integration.portal.held import HeldClient, decide, sql_op
from tests.integration.slack import scenario as sc
from tests.integration.slack.conftest import background_idle

UPDATE = "UPDATE invoices SET paid = true WHERE id = 7"


def _posted(fake, settle, rid: int) -> tuple[str, str, dict]:
    """(channel, ts, message) of review `rid`'s Slack message, once the notifier posted it."""

    def find():
        for (channel, ts), msg in list(fake.messages.items()):
            if any(e.get("value") == str(rid) for b in msg["blocks"] for e in b.get("elements") or ()):
                return channel, ts, msg
            if f"Review #{rid} " in json.dumps(msg["blocks"], ensure_ascii=False):
                return channel, ts, msg
        return None

    return settle(find, what=f"review {rid} posted")


def _votes(rid: int) -> list[tuple[str, str, int | None, str]]:
    with session_scope() as s:
        return [(v.approver, v.decision, v.window_minutes, v.via)
                for v in s.scalars(select(Vote).where(Vote.review_id == rid).order_by(Vote.id))]


def _audit(action: str) -> list[AuditEntry]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))


def _hook_texts(fake) -> list[str]:
    return [c.args.get("text", "") for c in fake.calls_of("hook")]


def _shown(fake, channel: str, ts: str) -> str:
    return json.dumps(fake.messages[(channel, ts)]["blocks"], ensure_ascii=False)


def _has_buttons(fake, channel: str, ts: str) -> bool:
    return any(b["type"] == "actions" for b in fake.messages[(channel, ts)]["blocks"])


def test_approve_in_slack_wakes_the_held_operation_and_updates_the_message(client, slack_env, settle):
    fake = slack_env
    held = HeldClient(sql_op(UPDATE), hold=30).start()
    rid = settle(lambda: _pending_id(), what="the held review")
    channel, ts, message = _posted(fake, settle, rid)
    started = time.monotonic()
    resp = sc.post_payload(client, sc.click(message, "airlock.approve", user="U_DAVE", channel=channel, ts=ts,
                                            response_url=fake.hook_url()))
    assert resp.status_code == 200 and resp.get_data() == b""
    assert time.monotonic() - started < 1.0  # acknowledged at once; the vote follows
    verdict = held.wait(20)
    assert verdict is not None and verdict.action == "allow" and verdict.status == "approved", verdict
    assert _votes(rid) == [("dave@example.com", "approve", None, "slack")]
    entry = _audit("review.vote")[-1]
    assert entry.actor == "dave@example.com" and entry.data["via"] == "slack"
    settle(lambda: not _has_buttons(fake, channel, ts), what="buttons removed")
    shown = _shown(fake, channel, ts)
    assert "✅ *Approved* by <@U_DAVE>" in shown and "(via slack)" in shown and "<!date^" in shown
    assert fake.calls_of("chat.update")
    assert _hook_texts(fake) == []  # nothing to complain about


def _pending_id() -> int | None:
    with session_scope() as s:
        return s.scalar(select(Review.id).where(Review.status == "pending").order_by(Review.id.desc()))


def test_approve_for_30_minutes_lets_the_same_operation_through_again(client, slack_env, settle):
    fake = slack_env
    rid = sc.open_review(sql_op(UPDATE))
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.approve_window", user="U_ALICE", channel=channel, ts=ts))
    settle(lambda: _votes(rid), what="the vote")
    assert _votes(rid) == [("alice@example.com", "approve", 30, "slack")]
    with session_scope() as s:
        fpa = s.scalars(select(FingerprintApproval).where(FingerprintApproval.review_id == rid)).one()
        minutes = (fpa.expires_at - fpa.created_at).total_seconds() / 60
    assert 29.9 < minutes <= 30.0
    # The window covers this shape: the same operation passes, twice, with no new review.
    for _ in range(2):
        again = decide(sql_op(UPDATE))
        assert again.action == "allow" and "shape approved" in again.message, again
    settle(lambda: not _has_buttons(fake, channel, ts), what="buttons removed")
    assert "approved for this service account for 30 min" in _shown(fake, channel, ts)


def test_reject_collects_a_reason_in_a_modal_and_denies_the_held_operation(client, slack_env, settle):
    fake = slack_env
    held = HeldClient(sql_op(UPDATE), hold=30).start()
    rid = settle(lambda: _pending_id(), what="the held review")
    channel, ts, message = _posted(fake, settle, rid)
    resp = sc.post_payload(client, sc.click(message, "airlock.reject", user="U_DAVE", channel=channel, ts=ts,
                                            response_url=fake.hook_url(), trigger_id="trig-77"))
    assert resp.status_code == 200
    opened = fake.wait_for(lambda: fake.calls_of("views.open"), what="views.open")[0]
    assert opened.args["trigger_id"] == "trig-77"
    view = opened.args["view"]
    assert view["callback_id"] == "airlock.reject_reason" and f"#{rid}" in view["title"]["text"]
    assert _votes(rid) == []  # opening the form decides nothing
    # A blank reason is refused inside the modal, synchronously.
    blank = sc.post_payload(client, sc.view_submission(view, {"reason": "   "}, user="U_DAVE"))
    assert blank.status_code == 200 and blank.get_json()["response_action"] == "errors"
    assert "reason" in blank.get_json()["errors"]
    resp = sc.post_payload(client, sc.view_submission(view, {"reason": "not during month-end close"}, user="U_DAVE"))
    assert resp.status_code == 200 and resp.get_data() == b""  # closes the modal
    verdict = held.wait(20)
    assert verdict is not None and verdict.action == "deny" and verdict.status == "rejected", verdict
    with session_scope() as s:
        review = s.get(Review, rid)
        assert (review.status, review.reason, review.decided_by) == ("rejected", "not during month-end close",
                                                                     "dave@example.com")
    settle(lambda: not _has_buttons(fake, channel, ts), what="buttons removed")
    shown = _shown(fake, channel, ts)
    assert "⛔ *Rejected* by <@U_DAVE>" in shown and "not during month-end close" in shown


def test_double_clicks_count_once(client, slack_env, settle):
    fake = slack_env
    op = Operation(protocol="postgres", connection="billing-db", kind="write", text="DELETE FROM ledger WHERE id = 1",
                   targets=("ledger",), fingerprint="fp:ledger")
    rid = sc.open_review(op)  # deletes-need-two: two approvals needed
    channel, ts, message = _posted(fake, settle, rid)
    payload = sc.click(message, "airlock.approve", user="U_DAVE", channel=channel, ts=ts, response_url=fake.hook_url())
    for _ in range(3):
        assert sc.post_payload(client, payload).status_code == 200
    settle(lambda: "1 of 2" in _shown(fake, channel, ts), what="one approval shown")
    background_idle()  # every click's background work has ended
    assert _votes(rid) == [("dave@example.com", "approve", None, "slack")]
    assert _hook_texts(fake) == []  # a repeated identical vote is not an error
    with session_scope() as s:
        assert s.get(Review, rid).status == "pending"
    assert _has_buttons(fake, channel, ts)
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_ALICE", channel=channel, ts=ts))
    settle(lambda: not _has_buttons(fake, channel, ts), what="approved by the second approver")
    assert "2 of 2" in _shown(fake, channel, ts)


def test_an_unlinked_slack_user_is_refused_with_an_ephemeral_reply(client, slack_env, settle):
    fake = slack_env
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_STRANGER", channel=channel, ts=ts,
                                     response_url=fake.hook_url("stranger")))
    hook = fake.wait_for(lambda: fake.calls_of("hook"), what="the ephemeral reply")[0]
    assert hook.args["hook"] == "stranger"
    assert hook.args["response_type"] == "ephemeral" and hook.args["replace_original"] is False
    assert "not linked" in hook.args["text"] and "/airlock link" in hook.args["text"]
    assert _votes(rid) == []
    refused = _audit("slack.vote_refused")
    assert refused and refused[-1].actor == "slack:U_STRANGER" and refused[-1].target == f"review:{rid}"


def test_an_unconfirmed_slack_email_does_not_link(client, slack_env, settle):
    fake = slack_env
    fake.add_user("U_ERIN", "erin@example.com", confirmed=False)
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_ERIN", channel=channel, ts=ts,
                                     response_url=fake.hook_url()))
    text = fake.wait_for(lambda: _hook_texts(fake), what="the ephemeral reply")[0]
    assert "not confirmed your email" in text
    assert _votes(rid) == []
    with session_scope() as s:
        assert s.scalar(select(User.slack_user_id).where(User.email == "erin@example.com")) is None


def test_a_verified_slack_email_links_the_user_and_the_vote_counts(client, slack_env, settle):
    fake = slack_env
    fake.add_user("U_ERIN", "Erin@Example.com")
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_ERIN", channel=channel, ts=ts))
    settle(lambda: _votes(rid), what="the vote")
    assert _votes(rid) == [("erin@example.com", "approve", None, "slack")]
    assert [c.args["user"] for c in fake.calls_of("users.info")] == ["U_ERIN"]
    with session_scope() as s:
        assert s.scalar(select(User.slack_user_id).where(User.email == "erin@example.com")) == "U_ERIN"
    link = _audit("slack.link")[-1]
    assert link.actor == "erin@example.com" and link.data["method"] == "verified email"


def test_a_non_member_is_refused_with_an_ephemeral_message(client, slack_env, settle):
    fake = slack_env
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    # No response_url this time: the reply goes through chat.postEphemeral.
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_BOB", channel=channel, ts=ts))
    call = fake.wait_for(lambda: fake.calls_of("chat.postEphemeral"), what="chat.postEphemeral")[0]
    assert (call.args["channel"], call.args["user"]) == (channel, "U_BOB")
    assert "not counted" in call.args["text"] and "not in an approver group" in call.args["text"]
    assert _votes(rid) == []
    assert _audit("slack.vote_refused")[-1].actor == "bob@example.com"


def test_reject_opens_no_form_for_someone_whose_rejection_would_not_count(client, slack_env, settle):
    fake = slack_env
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.reject", user="U_BOB", channel=channel, ts=ts,
                                     response_url=fake.hook_url(), trigger_id="trig-bob"))
    text = fake.wait_for(lambda: _hook_texts(fake), what="the ephemeral reply")[0]
    assert f"cannot reject review #{rid}" in text and "not in an approver group" in text
    assert not fake.calls_of("views.open")  # asked before the form opens: the vote would refuse it
    assert _votes(rid) == []
    assert _audit("slack.vote_refused")[-1].actor == "bob@example.com"


def test_self_approval_from_slack_is_refused(client, slack_env, settle):
    fake = slack_env
    # The runtime acted with dave's identity: dave may not approve its operation.
    rid = sc.open_review(sql_op(UPDATE), subject="dave@example.com")
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_DAVE", channel=channel, ts=ts,
                                     response_url=fake.hook_url()))
    text = fake.wait_for(lambda: _hook_texts(fake), what="the ephemeral reply")[0]
    assert "requester cannot vote on its own review" in text
    assert _votes(rid) == []
    with session_scope() as s:
        assert s.get(Review, rid).status == "pending"


def test_a_portal_only_review_cannot_be_voted_from_slack(client, slack_env, settle):
    fake = slack_env
    op = Operation(protocol="postgres", connection="billing-db", kind="ddl", text="DROP TABLE invoices",
                   targets=("invoices",), fingerprint="fp:drop")
    rid = sc.open_review(op)
    channel, ts, message = _posted(fake, settle, rid)
    # Its message has no buttons; a click is forged from another message's button.
    forged = {"blocks": [{"type": "actions", "block_id": "x", "elements": [
        {"type": "button", "action_id": "airlock.approve", "value": str(rid)}]}]}
    sc.post_payload(client, sc.click(forged, "airlock.approve", user="U_DAVE", channel=channel, ts=ts,
                                     response_url=fake.hook_url()))
    text = fake.wait_for(lambda: _hook_texts(fake), what="the ephemeral reply")[0]
    assert "must be approved in the portal" in text
    assert _votes(rid) == []
