"""Evidence: recorded sessions and their events, and the hash-chained audit log."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class RecordedSession(Base):
    """One runtime connection, recorded for replay."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_started", "started_at"),
        # Portal filters, newest first; (service_account, connection) also answers
        # "when was this grant last used" with one probe.
        Index("ix_sessions_sa_conn_started", "service_account", "connection", "started_at"),
        Index("ix_sessions_conn_started", "connection", "started_at"),
        Index("ix_sessions_protocol_started", "protocol", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    protocol: Mapped[str] = mapped_column(String(20))
    connection: Mapped[str] = mapped_column(String(200), default="")
    service_account: Mapped[str] = mapped_column(String(200), default="")
    run_id: Mapped[str | None] = mapped_column(String(200), index=True)
    client_addr: Mapped[str] = mapped_column(String(100), default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    digest: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The recorder (one per process) that writes it: while that recorder's lease is
    # fresh the session may still be running; once stale, it is sealed as an orphan.
    owner: Mapped[str | None] = mapped_column(String(100), index=True)


class RecordingOwner(Base):
    """A process's recorder and its heartbeat: the lease on the sessions it owns."""

    __tablename__ = "recording_owners"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # host:pid:random
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

class SessionEvent(Base):
    __tablename__ = "session_events"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    t: Mapped[float] = mapped_column(Float)  # seconds since the session started
    kind: Mapped[str] = mapped_column(String(20))  # input | output | decision | notice | resize
    data: Mapped[str] = mapped_column(Text)  # JSON

class AuditEntry(Base):
    """One link of the hash chain: hash = sha256(prev_hash + canonical_json(entry))."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        # Portal search, newest first by seq, and the dashboard's per-day counts by action.
        Index("ix_audit_action_seq", "action", "seq"),
        Index("ix_audit_actor_seq", "actor", "seq"),
        Index("ix_audit_target_seq", "target", "seq"),
        Index("ix_audit_action_ts", "action", "ts"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    ts: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str] = mapped_column(String(500), default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
