"""campaigns: access-review items with usage and deadlines, JIT access requests, usage indexes

Revision ID: 0004_campaigns
Revises: 0004_resil_b
Create Date: 2026-12-05 15:00:00
"""
from alembic import op
import sqlalchemy as sa
import app.models

revision = "0004_campaigns"
down_revision = "0004_resil_b"
branch_labels = None
depends_on = None

UTC = app.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as b:
        b.add_column(sa.Column("escalate_to", sa.String(length=320), nullable=True))
        b.add_column(sa.Column("unused_after_seconds", sa.Integer(), nullable=False, server_default=str(30 * 86400)))
    with op.batch_alter_table("campaign_runs") as b:
        b.add_column(sa.Column("started_by", sa.String(length=320), nullable=False, server_default="schedule"))
        b.add_column(sa.Column("escalated_at", UTC, nullable=True))
        b.create_index("ix_campaign_runs_campaign_started", ["campaign_id", "started_at"])
        b.create_index("ix_campaign_runs_status", ["status"])
    with op.batch_alter_table("campaign_items") as b:
        b.add_column(sa.Column("suggestion_reason", sa.Text(), nullable=False, server_default=""))
        b.add_column(sa.Column("policy_change", sa.Text(), nullable=False, server_default=""))
        b.add_column(sa.Column("decided_via", sa.String(length=20), nullable=True))
        b.add_column(sa.Column("due_at", UTC, nullable=True))
        b.add_column(sa.Column("escalated_from", sa.String(length=320), nullable=True))
        b.add_column(sa.Column("flagged", sa.Boolean(), nullable=False, server_default=sa.false()))
        b.add_column(sa.Column("deadline_outcome", sa.String(length=200), nullable=False, server_default=""))
        b.create_index("ix_campaign_items_run_reviewer", ["run_id", "reviewer", "status"])
        b.create_index("ix_campaign_items_reviewer_status", ["reviewer", "status"])
        b.create_index("ix_campaign_items_grant", ["grant_id"])
    op.create_table(
        "access_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_account", sa.String(length=200), nullable=False),
        sa.Column("connection", sa.String(length=200), nullable=False),
        sa.Column("requested_by", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=True),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("decided_at", UTC, nullable=True),
        sa.Column("decided_by", sa.String(length=320), nullable=True),
        sa.Column("access_until", UTC, nullable=True),
        sa.ForeignKeyConstraint(["review_id"], ["reviews.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["grant_id"], ["grants.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_access_requests_status_expires", "access_requests", ["status", "expires_at"])
    op.create_index("ix_access_requests_review", "access_requests", ["review_id"])
    op.create_table(
        "session_usage",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("service_account", sa.String(length=200), nullable=False),
        sa.Column("connection", sa.String(length=200), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("ops", sa.JSON(), nullable=False),
        sa.Column("denials", sa.Integer(), nullable=False),
        sa.Column("last_op_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id"),
    )
    op.create_index("ix_session_usage_sa_conn_started", "session_usage", ["service_account", "connection", "started_at"])
    op.create_index("ix_session_usage_started", "session_usage", ["started_at"])
    # Usage evidence: the reviews a grant caused; grants and tokens that expire.
    op.create_index("ix_reviews_sa_conn_created", "reviews", ["service_account", "connection", "created_at"])
    op.create_index("ix_grants_expires", "grants", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_grants_expires", table_name="grants")
    op.drop_index("ix_reviews_sa_conn_created", table_name="reviews")
    op.drop_table("session_usage")
    op.drop_table("access_requests")
    with op.batch_alter_table("campaign_items") as b:
        for ix in ("ix_campaign_items_grant", "ix_campaign_items_reviewer_status", "ix_campaign_items_run_reviewer"):
            b.drop_index(ix)
        for col in ("deadline_outcome", "flagged", "escalated_from", "due_at", "decided_via", "policy_change",
                    "suggestion_reason"):
            b.drop_column(col)
    with op.batch_alter_table("campaign_runs") as b:
        b.drop_index("ix_campaign_runs_status")
        b.drop_index("ix_campaign_runs_campaign_started")
        b.drop_column("escalated_at")
        b.drop_column("started_by")
    with op.batch_alter_table("campaigns") as b:
        b.drop_column("unused_after_seconds")
        b.drop_column("escalate_to")
