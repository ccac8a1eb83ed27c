"""Access reviews: campaigns, their runs, one item per grant, and just-in-time requests."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, utcnow


class Campaign(Base):
    """A recurring access review (recertification) definition."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    scope: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reviewers: Mapped[str] = mapped_column(String(320), default="owner")
    schedule: Mapped[str] = mapped_column(String(100), default="")
    duration_seconds: Mapped[int] = mapped_column(Integer, default=14 * 86400)
    remind_every_seconds: Mapped[int | None] = mapped_column(Integer)
    on_deadline: Mapped[str] = mapped_column(String(20), default="revoke")
    escalate_to: Mapped[str | None] = mapped_column(String(320))  # "group:NAME" (on_deadline: escalate)
    unused_after_seconds: Mapped[int] = mapped_column(Integer, default=30 * 86400)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    runs: Mapped[list[CampaignRun]] = relationship(back_populates="campaign", cascade="all, delete-orphan")

class CampaignRun(Base):
    """One instance of a campaign: started by the schedule, ends at its deadline."""

    __tablename__ = "campaign_runs"
    __table_args__ = (Index("ix_campaign_runs_campaign_started", "campaign_id", "started_at"),
                      Index("ix_campaign_runs_status", "status"))

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | closed
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_by: Mapped[str] = mapped_column(String(320), default="schedule")
    deadline: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    last_reminded_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]

    campaign: Mapped[Campaign] = relationship(back_populates="runs")
    items: Mapped[list[CampaignItem]] = relationship(back_populates="run", cascade="all, delete-orphan")

class CampaignItem(Base):
    """One grant to certify or revoke in a campaign run."""

    __tablename__ = "campaign_items"
    __table_args__ = (Index("ix_campaign_items_run_reviewer", "run_id", "reviewer", "status"),
                      Index("ix_campaign_items_reviewer_status", "reviewer", "status"),
                      Index("ix_campaign_items_grant", "grant_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id", ondelete="CASCADE"))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id", ondelete="SET NULL"))
    service_account: Mapped[str] = mapped_column(String(200))
    connection: Mapped[str] = mapped_column(String(200))
    # A user's email, or "group:NAME" (anyone in the group may decide).
    reviewer: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|certified|revoked|kept
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    suggestion: Mapped[str] = mapped_column(String(200), default="")  # revoke | narrow | keep
    suggestion_reason: Mapped[str] = mapped_column(Text, default="")
    policy_change: Mapped[str] = mapped_column(Text, default="")  # YAML for "narrow to read-only"
    justification: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decided_at: Mapped[datetime | None]
    decided_via: Mapped[str | None] = mapped_column(String(20))
    due_at: Mapped[datetime | None]  # set when escalated: a new, short deadline
    escalated_from: Mapped[str | None] = mapped_column(String(320))
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    deadline_outcome: Mapped[str] = mapped_column(String(200), default="")

    run: Mapped[CampaignRun] = relationship(back_populates="items")

class AccessRequest(Base):
    """Just-in-time access: a service account asks for a connection, for a while, with a reason.

    Approvers decide it as a review (`review_id`): the same groups, quorum and
    no-self-approval rules as a held operation. Approval makes a grant that expires.
    """

    __tablename__ = "access_requests"
    __table_args__ = (Index("ix_access_requests_status_expires", "status", "expires_at"),
                      Index("ix_access_requests_review", "review_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    service_account: Mapped[str] = mapped_column(String(200))
    connection: Mapped[str] = mapped_column(String(200))
    requested_by: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(Text)
    duration_seconds: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|approved|rejected|expired
    review_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id", ondelete="SET NULL"))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]  # of the pending request, not of the access
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(320))
    access_until: Mapped[datetime | None]

class SessionUsage(Base):
    """What one ended session did, summarised once for access reviews (a cache of its events:
    the recording stays the evidence). Sessions still open are read from their events."""

    __tablename__ = "session_usage"
    __table_args__ = (Index("ix_session_usage_sa_conn_started", "service_account", "connection", "started_at"),
                      Index("ix_session_usage_started", "started_at"))

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    service_account: Mapped[str] = mapped_column(String(200))
    connection: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime]
    ops: Mapped[dict[str, Any]] = mapped_column(default=dict)  # kind or HTTP method -> count
    denials: Mapped[int] = mapped_column(Integer, default=0)
    last_op_at: Mapped[datetime | None]
