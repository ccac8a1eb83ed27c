"""Deliver one queued Slack message: render it from the store as it is now, then post it
(first time) or update it in place (chat.update). The outbox's drainer calls it; it
sits below the outbox and app.slack.sync (which queue messages), so neither imports
the other's caller.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.approvals import review_url
from app.config import settings
from app.db import session_scope
from app.models import Connection, Review, SlackMessage, User, utcnow
from app.slack import client as slack
from app.slack import messages

log = logging.getLogger(__name__)


def resolve_channel(session: Session, review: Review) -> str | None:
    """The rule's channel, then the connection's `slack_channel`, then the default."""
    if review.channel:
        return review.channel
    config = session.scalar(select(Connection.config).where(Connection.name == review.connection)) or {}
    return config.get("slack_channel") or settings().slack_default_channel or None


def _people(session: Session, review: Review) -> dict[str, str]:
    """How to show each voter: a Slack mention if linked, else the name."""
    emails = {v.approver.lower() for v in review.votes}
    if review.decided_by:
        emails.add(review.decided_by.lower())
    if not emails:
        return {}
    users = session.scalars(select(User).where(func.lower(User.email).in_(emails))).all()
    out = {}
    for u in users:
        out[u.email.lower()] = f"<@{u.slack_user_id}>" if u.slack_user_id else messages.escape(u.name or u.email)
    return out


def render_review(session: Session, review: Review, now: datetime | None = None) -> tuple[str, list[dict[str, Any]]]:
    now = now or utcnow()
    card = messages.card_for(review, _people(session, review), review_url(review.id), now)
    return messages.review_text(card), messages.review_blocks(card, now)


def deliver_message(message_id: int) -> dict[str, Any]:
    """Post or update one message, rendered from the store as it is now."""
    now = utcnow()
    with session_scope() as s:
        row = s.get(SlackMessage, message_id)
        if row is None:
            return {"skipped": "message row is gone"}
        if row.review_id is not None:
            review = s.get(Review, row.review_id)
            if review is None:
                return {"skipped": "review is gone"}
            text, blocks = render_review(s, review, now)
            tag = messages.state_tag(review, now)
            target = row.channel or resolve_channel(s, review)
        else:
            text, blocks, tag, target = row.text, list(row.blocks or []), row.wanted, row.channel or row.target
        channel, ts = row.channel, row.ts
    client = slack.web_client()
    if ts is None:
        if not target:
            _note(message_id, "no Slack channel: set the rule's channel, the connection's slack_channel "
                              "or AIRLOCK_SLACK_DEFAULT_CHANNEL")
            return {"skipped": "no channel"}
        target = _dm_channel(client, target)
        resp = client.chat_postMessage(channel=target, text=text, blocks=blocks, unfurl_links=False,
                                       unfurl_media=False)
        channel, ts = resp["channel"], resp["ts"]
    else:
        client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
    with session_scope() as s:
        row = s.get(SlackMessage, message_id)
        if row is not None:
            row.channel, row.ts, row.shown, row.note = channel, ts, tag, ""
    return {"channel": channel, "ts": ts}


def _dm_channel(client, target: str) -> str:
    """A DM target ("email:..." or a user id) as the id of the bot's DM with that person."""
    if target.startswith("email:"):
        user = client.users_lookupByEmail(email=target[6:])["user"]
        target = user["id"]
    if target[:1] in ("U", "W"):
        return client.conversations_open(users=target)["channel"]["id"]
    return target


def _note(message_id: int, note: str) -> None:
    with session_scope() as s:
        row = s.get(SlackMessage, message_id)
        if row is not None and row.note != note:
            row.note = note
            log.warning("slack message %s not posted: %s", row.key, note)
