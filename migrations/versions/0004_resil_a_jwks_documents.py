"""resil-a: the last good JWKS per issuer, shared by every node

Revision ID: 0004_resil_a
Revises: 0003
Create Date: 2026-12-05 15:10:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0004_resil_a"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jwks_documents",
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("jwks_uri", sa.String(length=1000), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("issuer"),
    )


def downgrade() -> None:
    op.drop_table("jwks_documents")
