"""Held operations: reviews, votes, fingerprint approvals, and the wake-up bus."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, utcnow


class BusEvent(Base):
    """Cross-process wake-ups. Polled on SQLite; mirrored by NOTIFY on PostgreSQL."""

    __tablename__ = "bus_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

class Review(Base):
    """A held operation waiting for approvers."""

    __tablename__ = "reviews"
    __table_args__ = (
        Index("ix_reviews_status_created", "status", "created_at"),
        # Portal: reviews of one session; held operations per service account (dashboard).
        Index("ix_reviews_session", "session_id"),
        Index("ix_reviews_created", "created_at"),
        # Access reviews: the reviews one grant caused, in a time window.
        Index("ix_reviews_sa_conn_created", "service_account", "connection", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|approved|rejected|expired
    service_account: Mapped[str] = mapped_column(String(200))
    connection: Mapped[str] = mapped_column(String(200))
    protocol: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20), default="")
    operation: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128), index=True)  # the shape (window approvals)
    # The exact operation (approve once, joining a pending review): app/binding.py.
    binding: Mapped[str] = mapped_column(String(64), default="", index=True)
    shape: Mapped[str] = mapped_column(Text, default="")  # what a window would cover, with placeholders
    rule: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    groups: Mapped[list[Any]] = mapped_column(default=list)
    required: Mapped[int] = mapped_column(Integer, default=1)
    slack: Mapped[bool] = mapped_column(Boolean, default=True)
    channel: Mapped[str | None] = mapped_column(String(100))
    run_id: Mapped[str | None] = mapped_column(String(200), index=True)
    session_id: Mapped[str | None] = mapped_column(String(36))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(320))
    reason: Mapped[str | None] = mapped_column(Text)
    # An approved review lets the same operation through once, until this time.
    valid_until: Mapped[datetime | None]
    consumed_at: Mapped[datetime | None]
    # The held runtime disconnected or cancelled: nothing ran, the approval (if any) is unused.
    requester_gone_at: Mapped[datetime | None]

    votes: Mapped[list[Vote]] = relationship(
        back_populates="review", cascade="all, delete-orphan", lazy="selectin", order_by="Vote.id"
    )

class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("review_id", "approver"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"))
    approver: Mapped[str] = mapped_column(String(320))  # user email
    decision: Mapped[str] = mapped_column(String(10))  # approve | reject
    window_minutes: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    via: Mapped[str] = mapped_column(String(20), default="portal")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    review: Mapped[Review] = relationship(back_populates="votes")

class FingerprintApproval(Base):
    """A window approval: 'this shape, for this identity, for N minutes' (revocable)."""

    __tablename__ = "fingerprint_approvals"
    __table_args__ = (Index("ix_fpa_lookup", "service_account", "connection", "fingerprint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_account: Mapped[str] = mapped_column(String(200))
    connection: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(128))
    rule: Mapped[str] = mapped_column(String(200))
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(320))
