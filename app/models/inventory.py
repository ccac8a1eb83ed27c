"""What: connections, grants, policy rules, and the versions caches key on."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, utcnow

if TYPE_CHECKING:
    from app.models.identity import ServiceAccount


class Connection(Base):
    """A named target: http upstream hosts, a postgres/mysql database, an ssh host."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # non-secret settings
    secrets: Mapped[str | None] = mapped_column(Text)  # Fernet ciphertext of a JSON object
    owner: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:  # never show secrets
        return f"<Connection {self.name} ({self.type})>"

class Grant(Base):
    """Service account -> connection. Standing, or just-in-time with an expiry."""

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("service_account_id", "connection_id"),
                      Index("ix_grants_expires", "expires_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    service_account_id: Mapped[int] = mapped_column(ForeignKey("service_accounts.id", ondelete="CASCADE"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(320))
    source: Mapped[str] = mapped_column(String(20), default="policy")  # policy | portal | campaign
    created_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    service_account: Mapped[ServiceAccount] = relationship(lazy="joined")
    connection: Mapped[Connection] = relationship(lazy="joined")

    def active_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

class Rule(Base):
    """One policy rule, kept as the validated dict of the policy file."""

    __tablename__ = "rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

class StoreVersion(Base):
    """Monotonic counters that caches key on (name='policy': rules, grants, tokens)."""

    __tablename__ = "store_versions"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
