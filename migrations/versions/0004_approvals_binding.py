"""approvals: exact binding of approve-once, requester gone, revocable windows

Revision ID: 0004_approvals
Revises: 0004_campaigns
Create Date: 2026-12-05 15:00:00
"""
from alembic import op
import sqlalchemy as sa
import app.models

revision = "0004_approvals"
down_revision = "0004_campaigns"
branch_labels = None
depends_on = None

UTC = app.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    # Reviews opened before this revision have no binding: they can no longer be used
    # once (an empty binding never matches), which fails closed.
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("binding", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("shape", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("requester_gone_at", UTC, nullable=True))
        batch.create_index("ix_reviews_binding", ["binding"])
    with op.batch_alter_table("fingerprint_approvals") as batch:
        batch.add_column(sa.Column("revoked_at", UTC, nullable=True))
        batch.add_column(sa.Column("revoked_by", sa.String(length=320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fingerprint_approvals") as batch:
        batch.drop_column("revoked_by")
        batch.drop_column("revoked_at")
    with op.batch_alter_table("reviews") as batch:
        batch.drop_index("ix_reviews_binding")
        batch.drop_column("requester_gone_at")
        batch.drop_column("shape")
        batch.drop_column("binding")
