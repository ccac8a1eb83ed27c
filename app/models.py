"""Typed SQLAlchemy 2.0 models: the store every process shares.

Times are stored as timezone-aware UTC. Secrets live only in `Connection.secrets`
(Fernet ciphertext, see app.vault) and as hashes (`Token.token_hash`,
`User.password_hash`, `User.api_token_hash`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Index,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """SQLite forgets tzinfo; hand back aware UTC datetimes on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


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
    __table_args__ = (UniqueConstraint("service_account_id", "connection_id"),)

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
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|approved|rejected|expired
    service_account: Mapped[str] = mapped_column(String(200))
    connection: Mapped[str] = mapped_column(String(200))
    protocol: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20), default="")
    operation: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128), index=True)
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
    """'Approve this fingerprint for this identity for N minutes'."""

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
