"""Slack: messages kept true, the delivery outbox, and account-link codes."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class SlackMessage(Base):
    """A Slack message airlock keeps true: a review's channel message, or an access-review DM.

    Review messages are rendered from the review at delivery time; DMs keep their blocks
    here, because they show plain item data that the caller handed over once.
    """

    __tablename__ = "slack_messages"
    __table_args__ = (
        Index("ix_slack_messages_channel_ts", "channel", "ts"),
        Index("ix_slack_messages_final", "final"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # review:<id> | dm:<uuid>
    review_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"), unique=True)
    target: Mapped[str | None] = mapped_column(String(320))  # DMs: "email:<address>" or a Slack user id
    channel: Mapped[str | None] = mapped_column(String(100))  # the channel id Slack posted it in
    ts: Mapped[str | None] = mapped_column(String(32))  # Slack's id of the message, once posted
    text: Mapped[str] = mapped_column(Text, default="")
    blocks: Mapped[list[Any]] = mapped_column(default=list)
    wanted: Mapped[str] = mapped_column(String(60), default="")  # the state last queued for Slack
    shown: Mapped[str | None] = mapped_column(String(60))  # the state Slack last accepted
    final: Mapped[bool] = mapped_column(Boolean, default=False)  # its last state is queued
    note: Mapped[str] = mapped_column(Text, default="")  # why it could not be posted, if so
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

class SlackOutbox(Base):
    """Slack deliveries not yet made, retried with backoff: an outage or a restart loses none.

    kind `message` keeps one SlackMessage in sync (one row per message, re-armed on each
    change); `call` is one Web API call; `response` is one POST to an interaction's
    response_url.
    """

    __tablename__ = "slack_outbox"
    __table_args__ = (Index("ix_slack_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str | None] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    method: Mapped[str] = mapped_column(String(60), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|sending|done|dead
    generation: Mapped[int] = mapped_column(Integer, default=0)  # bumped when re-armed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]  # a sender crashed if this passed while sending
    give_up_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    done_at: Mapped[datetime | None]

class SlackLinkCode(Base):
    """A one-time code a signed-in portal user makes, then types as `/airlock link CODE` in Slack.

    The portal login proves the airlock identity and Slack's signed command proves the
    Slack one; the code only ties the two moments together, and only its hash is kept.
    """

    __tablename__ = "slack_link_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    slack_user_id: Mapped[str | None] = mapped_column(String(64))  # who redeemed it
    team_id: Mapped[str | None] = mapped_column(String(64))
