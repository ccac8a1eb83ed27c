"""Who: people (portal users), groups, service accounts and their minted tokens."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, ForeignKey, String, Table, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from app.models.base import Base, utcnow


user_groups = Table(
    "user_groups",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

service_account_groups = Table(
    "service_account_groups",
    Base.metadata,
    Column("service_account_id", ForeignKey("service_accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)

class User(Base):
    """A human: reviewer, approver, auditor or admin."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    roles: Mapped[list[Any]] = mapped_column(default=list)
    password_hash: Mapped[str | None] = mapped_column(String(300))
    api_token_hash: Mapped[str | None] = mapped_column(String(128), index=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(300))
    slack_user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(20), default="policy")  # policy | oidc | portal
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]

    groups: Mapped[list[Group]] = relationship(secondary=user_groups, lazy="selectin")

    @property
    def group_names(self) -> set[str]:
        return {g.name for g in self.groups}

def user_by_email(session: Session, email: str | None) -> User | None:
    """The portal user with this email. Emails are unique without regard to case
    (`airlock apply` and the portal compare them lowered), so the lookup is too."""
    wanted = (email or "").strip().lower()
    return session.scalars(select(User).where(func.lower(User.email) == wanted)).first() if wanted else None


class ServiceAccount(Base):
    """A machine identity: an agent, a CI job, a scheduled runtime."""

    __tablename__ = "service_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    oidc_issuer: Mapped[str | None] = mapped_column(String(500))
    oidc_subject: Mapped[str | None] = mapped_column(String(300))
    groups_claim: Mapped[str | None] = mapped_column(String(100))
    public_keys: Mapped[list[Any]] = mapped_column(default=list)  # OpenSSH public keys
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    groups: Mapped[list[Group]] = relationship(secondary=service_account_groups, lazy="selectin")
    tokens: Mapped[list[Token]] = relationship(back_populates="service_account", cascade="all, delete-orphan")

    @property
    def group_names(self) -> set[str]:
        return {g.name for g in self.groups}

class Token(Base):
    """An airlock-minted token (`alk_...`). Only its SHA-256 is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_account_id: Mapped[int] = mapped_column(ForeignKey("service_accounts.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell tokens apart
    description: Mapped[str] = mapped_column(String(300), default="")
    created_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    service_account: Mapped[ServiceAccount] = relationship(back_populates="tokens")
