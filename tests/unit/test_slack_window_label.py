"""Slack shows what each approval covers before the click (issue 16, finding 1)."""
from __future__ import annotations

from datetime import timedelta

from app.models import Review, utcnow
from app.slack.messages import APPROVE, APPROVE_WINDOW, card_for, review_blocks


def _review(**kw) -> Review:
    now = utcnow()
    fields = dict(id=7, status="pending", service_account="billing-agent", connection="billing-db",
                  protocol="postgres", kind="write", operation="DELETE FROM invoices WHERE id = $1",
                  fingerprint="fp", binding="b", shape="DELETE FROM invoices WHERE id = $1", rule="r",
                  message="", groups=["dba"], required=1, slack=True, details={"params": ["42"]},
                  created_at=now, expires_at=now + timedelta(hours=1), votes=[])
    fields.update(kw)
    return Review(**fields)


def _text(blocks) -> str:
    import json
    return json.dumps(blocks, ensure_ascii=False)


def test_buttons_say_what_they_cover_and_the_window_asks_to_confirm():
    blocks = review_blocks(card_for(_review(), {}, "https://airlock.test/reviews/7"))
    buttons = {e["action_id"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]}
    assert buttons[APPROVE]["text"]["text"] == "Approve once (exactly this)"
    window = buttons[APPROVE_WINDOW]
    assert window["text"]["text"].startswith("Approve this shape for 30 min")
    assert window["confirm"]["confirm"]["text"] == "Approve for 30 min" and "every operation" in \
        window["confirm"]["text"]["text"]
    text = _text(blocks)
    assert "A window would cover" in text and "any length" in text
    assert "$1 = 42" in text  # the bound parameter approve-once covers


def test_a_requester_who_left_is_flagged_and_no_window_without_a_shape():
    blocks = review_blocks(card_for(_review(requester_gone_at=utcnow(), fingerprint=""), {}, "u"))
    text = _text(blocks)
    assert "Requester gone" in text and "nothing ran" in text
    assert APPROVE_WINDOW not in text and "A window would cover" not in text
