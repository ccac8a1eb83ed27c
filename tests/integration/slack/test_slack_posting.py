"""New reviews are posted to the right channel, with what a reviewer needs to decide."""
from __future__ import annotations

import json

from sqlalchemy import func, select

from app.config import settings
from app.db import session_scope
from app.models import SlackMessage, SlackOutbox
from app.slack import notifier, outbox
from app.types import Operation
from tests.integration.portal.held import http_op, sql_op
from tests.integration.slack import scenario as sc


def _posted(fake, channel_name: str) -> list:
    cid = fake.channel_id(channel_name)
    return [c for c in fake.calls_of("chat.postMessage") if fake.channel_id(str(c.args["channel"])) == cid]


def _actions(blocks: list[dict]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def test_a_new_review_is_posted_with_everything_a_reviewer_needs(slack_env, settle):
    fake = slack_env
    rid = sc.open_review(sql_op("UPDATE invoices SET paid = true WHERE id = 7"), run_id="run-42")
    call = settle(lambda: (_posted(fake, "#billing-approvals") or [None])[0], what="the review's post")
    text = json.dumps(call.args["blocks"], ensure_ascii=False)
    assert call.token == sc.BOT_TOKEN
    for expected in ("UPDATE invoices SET paid = true WHERE id = 7", "billing-agent", "billing-db", "writes-need-dba",
                     "run-42", "Time left", "🟠 medium", f"https://airlock.example.test/reviews/{rid}",
                     "0 of 1"):
        assert expected in text, expected
    assert _actions(call.args["blocks"]) == ["airlock.approve", "airlock.approve_window", "airlock.reject"]
    buttons = [e for b in call.args["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert {b["value"] for b in buttons} == {str(rid)}
    assert "Approve this shape for 30 min…" in [b["text"]["text"] for b in buttons]
    assert f"Review #{rid}" in call.args["text"]
    with session_scope() as s:
        msg = s.scalars(select(SlackMessage).where(SlackMessage.review_id == rid)).one()
        assert (msg.channel, msg.ts, msg.shown) == (fake.channel_id("#billing-approvals"), call_ts(fake, call), "pending:0")
    # Posted once: more rounds change nothing.
    notifier.tick()
    notifier.tick()
    assert len(fake.calls_of("chat.postMessage")) == 1


def call_ts(fake, call) -> str:
    cid = fake.channel_id(str(call.args["channel"]))
    return next(ts for (c, ts) in fake.messages if c == cid)


def test_channel_comes_from_rule_then_connection_then_default(slack_env, settle):
    fake = slack_env
    sc.open_review(http_op("POST", "/v1/refunds/9"))  # rule channel: #refunds
    sc.open_review(sql_op("DELETE FROM invoices WHERE id = 3"))  # connection's slack_channel
    sc.open_review(http_op("DELETE", "/v1/customers/5"))  # neither: the default channel
    settle(lambda: len(fake.calls_of("chat.postMessage")) == 3, what="three posts")
    assert len(_posted(fake, "#refunds")) == 1
    assert len(_posted(fake, "#billing-approvals")) == 1
    assert len(_posted(fake, sc.DEFAULT_CHANNEL)) == 1
    assert "refunds-need-dba" in json.dumps(_posted(fake, "#refunds")[0].args["blocks"], ensure_ascii=False)
    assert "payment-deletes" in json.dumps(_posted(fake, sc.DEFAULT_CHANNEL)[0].args["blocks"], ensure_ascii=False)


def test_a_portal_only_rule_is_posted_without_buttons(slack_env, settle):
    fake = slack_env
    op = Operation(protocol="postgres", connection="billing-db", kind="ddl", text="DROP TABLE invoices",
                   targets=("invoices",), fingerprint="fp:drop")
    rid = sc.open_review(op)
    call = settle(lambda: (fake.calls_of("chat.postMessage") or [None])[0], what="the post")
    text = json.dumps(call.args["blocks"], ensure_ascii=False)
    assert _actions(call.args["blocks"]) == []
    assert "Approve in the portal" in text and f"/reviews/{rid}" in text and "🔴 high" in text


def test_no_channel_anywhere_posts_nothing_and_says_why(slack_env, settle, monkeypatch):
    fake = slack_env
    monkeypatch.delenv("AIRLOCK_SLACK_DEFAULT_CHANNEL")
    settings.cache_clear()
    rid = sc.open_review(http_op("DELETE", "/v1/customers/5"))

    def noted():
        with session_scope() as s:
            return s.scalar(select(SlackMessage.note).where(SlackMessage.review_id == rid))

    note = settle(noted, what="a note on the message")
    assert "AIRLOCK_SLACK_DEFAULT_CHANNEL" in note
    assert fake.calls_of("chat.postMessage") == []


def test_without_a_bot_token_nothing_is_queued(slack_env, monkeypatch):
    fake = slack_env
    monkeypatch.delenv("AIRLOCK_SLACK_BOT_TOKEN")
    settings.cache_clear()
    sc.open_review()
    assert notifier.reconcile() == 0
    outbox.drain()
    with session_scope() as s:
        assert s.scalar(select(func.count(SlackOutbox.id))) == 0
        assert s.scalar(select(func.count(SlackMessage.id))) == 0
    assert fake.calls == []


def test_operation_text_cannot_inject_mrkdwn(slack_env, settle):
    fake = slack_env
    nasty = "UPDATE t SET note = '<!channel> ``` *bold* <https://evil.test|click>' WHERE id = 1"
    sc.open_review(sql_op(nasty))
    call = settle(lambda: (fake.calls_of("chat.postMessage") or [None])[0], what="the post")
    section = next(b for b in call.args["blocks"] if b["type"] == "section" and "text" in b)["text"]["text"]
    assert "<!channel>" not in section and "&lt;!channel&gt;" in section
    assert "<https://evil.test" not in section
    # Our code block opens once and closes once: the ``` inside was broken up.
    assert section.count("```") == 2
