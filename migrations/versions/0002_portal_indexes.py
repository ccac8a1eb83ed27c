"""portal indexes: session filters, audit search, dashboard counts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:00:00
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_reviews_session", "reviews", ["session_id"]),
    ("ix_reviews_created", "reviews", ["created_at"]),
    ("ix_sessions_sa_conn_started", "sessions", ["service_account", "connection", "started_at"]),
    ("ix_sessions_conn_started", "sessions", ["connection", "started_at"]),
    ("ix_sessions_protocol_started", "sessions", ["protocol", "started_at"]),
    ("ix_audit_action_seq", "audit_entries", ["action", "seq"]),
    ("ix_audit_actor_seq", "audit_entries", ["actor", "seq"]),
    ("ix_audit_target_seq", "audit_entries", ["target", "seq"]),
    ("ix_audit_action_ts", "audit_entries", ["action", "ts"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
