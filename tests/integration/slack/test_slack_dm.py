"""The access-review DM helper: items in a DM, Certify (with a justification) and Revoke."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from app.db import session_scope
from app.models import utcnow
from app.slack import dm, notifier
from tests.integration.slack import scenario as sc

ITEMS = [
    dm.ReviewItem(id=11, service_account="billing-agent", connection="billing-db",
                  last_used=utcnow() - timedelta(days=3), usage="412 reads, 3 writes in 30 days",
                  suggestion="narrow to read-only"),
    dm.ReviewItem(id=12, service_account="billing-agent", connection="payments-api", usage="0 operations",
                  suggestion="revoke: unused for 45 days"),
]


@pytest.fixture
def decisions(monkeypatch):
    """A stand-in for the campaigns service's decider: it records, and refuses item 99."""
    seen: list[tuple[int, str, str, str]] = []

    def decide(session, item_id, decision, reviewer_email, justification):
        assert session.get_bind() is not None  # it runs inside a store transaction
        if item_id == 99:
            raise dm.ItemError("Item 99 is not yours to decide.")
        seen.append((item_id, decision, reviewer_email, justification))
        return f"{'✅ Certified' if decision == 'certify' else '🚫 Revoked'} by {reviewer_email}"

    monkeypatch.setattr(dm, "_decider", decide)
    return seen


def _send(email: str, items=ITEMS) -> list[str]:
    with session_scope() as s:
        return dm.send_review_items(s, reviewer_email=email, items=items, title="Quarterly review",
                                    deadline=utcnow() + timedelta(days=7), portal_url="https://airlock.example.test/c/1")


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


def test_items_are_dmed_and_revoke_and_certify_reach_the_decider(client, slack_env, settle, decisions):
    fake = slack_env
    keys = _send("alice@example.com")
    assert len(keys) == 1
    channel, ts, message = _dm(fake, settle, "DU_ALICE")  # alice is linked: no email lookup
    assert [c.args["users"] for c in fake.calls_of("conversations.open")] == ["U_ALICE"]
    assert fake.calls_of("users.lookupByEmail") == []
    text = json.dumps(message["blocks"], ensure_ascii=False)
    for expected in ("Quarterly review", "billing-db", "payments-api", "412 reads", "narrow to read-only",
                     "https://airlock.example.test/c/1"):
        assert expected in text
    assert _buttons(message) == {"11": ["airlock.certify", "airlock.revoke"], "12": ["airlock.certify", "airlock.revoke"]}
    revoke = next(e for b in message["blocks"] for e in b.get("elements") or () if e.get("action_id") == "airlock.revoke")
    assert revoke["confirm"]["confirm"]["text"] == "Revoke"  # Slack asks before it sends the click

    # Revoke item 12: straight to the decider, then the DM shows the outcome instead of its buttons.
    click = sc.click({"blocks": [b for b in message["blocks"] if b.get("block_id") == "item-12"]},
                     "airlock.revoke", user="U_ALICE", channel=channel, ts=ts, response_url=fake.hook_url())
    click["message"]["blocks"] = message["blocks"]
    assert sc.post_payload(client, click).status_code == 200
    fake.wait_for(lambda: "12" not in _buttons(fake.messages[(channel, ts)]), what="item 12 decided in the DM")
    assert decisions == [(12, "revoke", "alice@example.com", "")]
    assert "🚫 Revoked by alice@example.com" in json.dumps(fake.messages[(channel, ts)]["blocks"], ensure_ascii=False)
    assert "11" in _buttons(fake.messages[(channel, ts)])

    # Certify item 11: a modal asks why; the justification reaches the decider.
    message = fake.messages[(channel, ts)]
    sc.post_payload(client, sc.click(message, "airlock.certify", user="U_ALICE", channel=channel, ts=ts,
                                     trigger_id="trig-c"))
    view = fake.wait_for(lambda: fake.calls_of("views.open"), what="the certify modal")[0].args["view"]
    assert view["callback_id"] == "airlock.certify_reason" and "billing-db" in json.dumps(view)
    blank = sc.post_payload(client, sc.view_submission(view, {"justification": ""}, user="U_ALICE"))
    assert blank.get_json()["response_action"] == "errors"
    sc.post_payload(client, sc.view_submission(view, {"justification": "nightly reconciliation"}, user="U_ALICE"))
    fake.wait_for(lambda: _buttons(fake.messages[(channel, ts)]) == {}, what="item 11 decided in the DM")
    assert decisions[-1] == (11, "certify", "alice@example.com", "nightly reconciliation")
    assert fake.calls_of("hook") == []


def test_an_unlinked_reviewer_is_found_by_email_and_long_lists_are_split(slack_env, settle):
    fake = slack_env
    fake.add_user("U_ERIN", "erin@example.com")
    many = [dm.ReviewItem(id=i, service_account=f"sa-{i}", connection="billing-db") for i in range(1, 21)]
    assert len(_send("erin@example.com", many)) == 2
    settle(lambda: len([k for k in fake.messages if k[0] == "DU_ERIN"]) == 2, what="two DMs")
    assert [c.args["email"] for c in fake.calls_of("users.lookupByEmail")] == ["erin@example.com"] * 2
    sizes = sorted(len(_buttons(m)) for (c, _), m in fake.messages.items() if c == "DU_ERIN")
    assert sizes == [5, 15]
    assert all(len(m["blocks"]) <= 50 for m in fake.messages.values())


def test_a_refused_or_impossible_decision_gets_an_ephemeral_reply(client, slack_env, settle, decisions, monkeypatch):
    fake = slack_env
    _send("alice@example.com", [dm.ReviewItem(id=99, service_account="billing-agent", connection="billing-db")])
    channel, ts, message = _dm(fake, settle, "DU_ALICE")
    sc.post_payload(client, sc.click(message, "airlock.revoke", user="U_ALICE", channel=channel, ts=ts,
                                     response_url=fake.hook_url()))
    text = fake.wait_for(lambda: [c.args["text"] for c in fake.calls_of("hook")], what="the reply")[0]
    assert text == "Item 99 is not yours to decide."
    assert decisions == [] and "99" in _buttons(fake.messages[(channel, ts)])
    monkeypatch.setattr(dm, "_decider", None)  # no campaigns service in this build
    sc.post_payload(client, sc.click(message, "airlock.revoke", user="U_ALICE", channel=channel, ts=ts,
                                     response_url=fake.hook_url()))
    fake.wait_for(lambda: len(fake.calls_of("hook")) == 2, what="the second reply")
    assert "use the portal" in fake.calls_of("hook")[1].args["text"].lower()


def test_nothing_is_sent_without_slack(slack_env, monkeypatch):
    from app.config import settings

    monkeypatch.delenv("AIRLOCK_SLACK_BOT_TOKEN")
    settings.cache_clear()
    assert _send("alice@example.com") == []
    notifier.tick()
    assert slack_env.calls == []
