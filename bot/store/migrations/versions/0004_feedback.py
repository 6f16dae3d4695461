"""Production feedback and the per-repository tokens that post it; each case's origin (`lineage:`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_tokens",
        sa.Column("repository", sa.String(1000), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_merge_fire_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("repository", sa.String(1000), nullable=False),
        sa.Column("suite", sa.String(255), nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("correct", sa.Boolean, nullable=False),
        sa.Column("corrected", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pull_request", sa.Integer, nullable=True),
        sa.Column("merge_sha", sa.String(200), nullable=True),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_feedback_pending", "feedback", ["repository", "pull_request"])
    with op.batch_alter_table("case_outcomes") as outcomes:
        outcomes.add_column(sa.Column("origin", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("case_outcomes") as outcomes:
        outcomes.drop_column("origin")
    op.drop_index("ix_feedback_pending", "feedback")
    op.drop_table("feedback")
    op.drop_table("feedback_tokens")
