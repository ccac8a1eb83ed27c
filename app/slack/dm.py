"""Access-review DMs: a reviewer gets their items in Slack, with Certify and Revoke buttons.

For the campaigns service. It hands over plain item data and, once, a decider:

    from app.slack import dm

    dm.set_decider(decide_from_slack)      # (session, item_id, decision, reviewer_email, justification) -> str
    keys = dm.send_review_items(session, reviewer_email="alice@example.com", items=[
        dm.ReviewItem(id=item.id, service_account="billing-agent", connection="billing-db",
                      last_used=..., usage="412 reads, 3 writes in 30 days", suggestion="narrow to read-only"),
    ], title="Quarterly review of billing-db", deadline=run.deadline, portal_url=".../campaigns/3")

Slack code only passes the click on: the decider (campaign logic) checks that this
reviewer may decide this item, applies it, and returns the line the DM then shows, or
raises `ItemError` with a message for the reviewer. Certify asks for a justification in
a modal; Revoke asks for a confirmation in Slack first. A decision made in the portal
can update the DM through `record_outcome(session, key=..., item_id=..., outcome=...)`.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import SlackMessage, user_by_email, utcnow
from app.slack import client as slack
from app.slack import outbox
from app.slack.messages import escape, mrkdwn, plain, slack_date

CERTIFY = "airlock.certify"
REVOKE = "airlock.revoke"
CERTIFY_VIEW = "airlock.certify_reason"
JUSTIFICATION_BLOCK = "justification"
ITEMS_PER_MESSAGE = 15  # two blocks each, under Slack's 50 blocks per message

Decider = Callable[[Session, int, str, str, str], str]


class ItemError(Exception):
    """A decision the campaigns service refused; `message` is shown to the reviewer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ReviewItem:
    """One grant to certify or revoke, as the reviewer sees it."""

    id: int
    service_account: str
    connection: str
    last_used: datetime | None = None
    usage: str = ""  # one line, e.g. "412 reads, 3 writes, 0 denials in 30 days"
    suggestion: str = ""  # e.g. "revoke: unused for 45 days"


_decider: Decider | None = None


def set_decider(fn: Decider | None) -> None:
    global _decider
    _decider = fn


def decider() -> Decider | None:
    """The campaigns service's decider, once it registered (importing app.campaigns does)."""
    return _decider


def send_review_items(
    session: Session, *, reviewer_email: str, items: Sequence[ReviewItem], title: str = "Access review",
    deadline: datetime | None = None, portal_url: str | None = None,
) -> list[str]:
    """Queue DMs of `items` to the reviewer, in the caller's transaction; returns the message keys.

    Nothing is queued (and [] returned) when Slack is not configured. The reviewer is
    reached by their linked Slack user, else by email (users.lookupByEmail) at delivery.
    """
    if not slack.configured() or not items:
        return []
    user = user_by_email(session, reviewer_email)
    target = user.slack_user_id if user is not None and user.slack_user_id else f"email:{reviewer_email.strip()}"
    chunks = [list(items[i:i + ITEMS_PER_MESSAGE]) for i in range(0, len(items), ITEMS_PER_MESSAGE)]
    keys = []
    now = utcnow()
    for n, chunk in enumerate(chunks, 1):
        part = f" ({n} of {len(chunks)})" if len(chunks) > 1 else ""
        row = SlackMessage(key=f"dm:{uuid.uuid4().hex}", target=target, wanted="rev:1", final=True,
                           text=f"{title}{part}: {len(chunk)} grant(s) to certify or revoke",
                           blocks=item_blocks(chunk, title=title + part, deadline=deadline, portal_url=portal_url),
                           created_at=now, updated_at=now)
        session.add(row)
        session.flush()
        outbox.queue_message(session, row.id, now=now)
        keys.append(row.key)
    return keys


def item_blocks(items: Sequence[ReviewItem], *, title: str, deadline: datetime | None = None,
                portal_url: str | None = None) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "header", "text": plain(title, 150)}]
    notes = ["Certify the grants this runtime still needs; revoke the others (at once, at the gate)."]
    if deadline is not None:
        notes.append(f"Due {slack_date(deadline)}.")
    if portal_url:
        notes.append(f"<{portal_url}|Review in the portal>")
    blocks.append({"type": "context", "elements": [mrkdwn(" ".join(notes))]})
    for item in items:
        lines = [f"*{escape(item.service_account)}* → *{escape(item.connection)}*"]
        used = f"last used {slack_date(item.last_used)}" if item.last_used else "never used"
        lines.append(used + (f" · {escape(item.usage)}" if item.usage else ""))
        if item.suggestion:
            lines.append(f"_Suggested: {escape(item.suggestion)}_")
        blocks.append({"type": "section", "block_id": f"item-{item.id}-info", "text": mrkdwn("\n".join(lines)[:2900])})
        blocks.append({"type": "actions", "block_id": f"item-{item.id}", "elements": [
            {"type": "button", "action_id": CERTIFY, "text": plain("Certify…", 75), "style": "primary",
             "value": str(item.id)},
            {"type": "button", "action_id": REVOKE, "text": plain("Revoke", 75), "style": "danger",
             "value": str(item.id), "confirm": {
                 "title": plain("Revoke this grant?", 100),
                 "text": mrkdwn(f"*{escape(item.service_account)}* loses access to *{escape(item.connection)}* at once."),
                 "confirm": plain("Revoke", 30), "deny": plain("Cancel", 30), "style": "danger"}},
        ]})
    return blocks


def mark_item(blocks: list[dict[str, Any]], item_id: int, outcome: str) -> list[dict[str, Any]] | None:
    """The blocks with the item's buttons replaced by its outcome (None: item not in them)."""
    out, found = [], False
    for block in blocks:
        if block.get("block_id") in (f"item-{item_id}", f"item-{item_id}-done"):
            found = True
            out.append({"type": "context", "block_id": f"item-{item_id}-done", "elements": [mrkdwn(outcome[:2900])]})
        else:
            out.append(block)
    return out if found else None


def record_outcome(session: Session, *, item_id: int, outcome: str, key: str | None = None,
                   channel: str | None = None, ts: str | None = None) -> bool:
    """Show `outcome` (mrkdwn) in place of the item's buttons, in the DM found by key or channel+ts."""
    stmt = select(SlackMessage)
    if key:
        stmt = stmt.where(SlackMessage.key == key)
    elif channel and ts:
        stmt = stmt.where(SlackMessage.channel == channel, SlackMessage.ts == ts)
    else:
        return False
    row = session.scalars(stmt).first()
    if row is None or row.review_id is not None:
        return False
    blocks = mark_item(list(row.blocks or []), item_id, outcome)
    if blocks is None:
        return False
    row.blocks = blocks
    rev = int(row.wanted.partition(":")[2] or 0) + 1 if row.wanted.startswith("rev:") else 1
    row.wanted = f"rev:{rev}"
    session.flush()
    outbox.queue_message(session, row.id)
    return True


def certify_modal(item_id: int, summary: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": CERTIFY_VIEW,
        "title": plain("Certify access", 24),
        "submit": plain("Certify", 24),
        "close": plain("Cancel", 24),
        "private_metadata": json.dumps({**metadata, "item_id": item_id}, separators=(",", ":"))[:3000],
        "blocks": [
            {"type": "section", "text": mrkdwn(summary[:2900])},
            {"type": "input", "block_id": JUSTIFICATION_BLOCK,
             "label": plain("Why does it still need this access?", 2000),
             "element": {"type": "plain_text_input", "action_id": JUSTIFICATION_BLOCK, "multiline": True,
                         "min_length": 1, "max_length": 2000}},
        ],
    }


def item_summary(blocks: list[dict[str, Any]], item_id: int) -> str:
    """The item's text from the message, for the modal (the payload carries the blocks)."""
    for block in blocks or []:
        if block.get("block_id") == f"item-{item_id}-info":
            return str((block.get("text") or {}).get("text") or "")
    return f"Item {item_id}"
