"""Access reviews: campaigns, their runs, and one item per grant to certify or revoke."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
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
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    runs: Mapped[list[CampaignRun]] = relationship(back_populates="campaign", cascade="all, delete-orphan")

class CampaignRun(Base):
    """One instance of a campaign: started by the schedule, ends at its deadline."""

    __tablename__ = "campaign_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | closed
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    last_reminded_at: Mapped[datetime | None]

    campaign: Mapped[Campaign] = relationship(back_populates="runs")
    items: Mapped[list[CampaignItem]] = relationship(back_populates="run", cascade="all, delete-orphan")

class CampaignItem(Base):
    """One grant to certify or revoke in a campaign run."""

    __tablename__ = "campaign_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("campaign_runs.id", ondelete="CASCADE"))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("grants.id", ondelete="SET NULL"))
    service_account: Mapped[str] = mapped_column(String(200))
    connection: Mapped[str] = mapped_column(String(200))
    reviewer: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|certified|revoked
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    suggestion: Mapped[str] = mapped_column(String(200), default="")
    justification: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decided_at: Mapped[datetime | None]

    run: Mapped[CampaignRun] = relationship(back_populates="items")
