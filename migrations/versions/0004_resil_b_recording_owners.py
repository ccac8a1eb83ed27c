"""recording owners: which process records each session, and its heartbeat

Revision ID: 0004_resil_b
Revises: 0004_resil_a
Create Date: 2026-12-05 15:00:00
"""
from alembic import op
import sqlalchemy as sa
import app.models

revision = "0004_resil_b"
down_revision = "0004_resil_a"
branch_labels = None
depends_on = None

UTC = app.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recording_owners",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("heartbeat_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_recording_owners_heartbeat_at", "recording_owners", ["heartbeat_at"], unique=False)
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch.create_index("ix_sessions_owner", ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_owner")
        batch.drop_column("owner")
    op.drop_index("ix_recording_owners_heartbeat_at", table_name="recording_owners")
    op.drop_table("recording_owners")
