"""What the run page shows: the untrimmed report and its links on the run, each answer and its grades.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    # batch mode: SQLite alters a table by copying it; PostgreSQL gets plain ALTER TABLE.
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("report_markdown", sa.Text, nullable=True))
        runs.add_column(sa.Column("pr_url", sa.String(1000), nullable=True))
        runs.add_column(sa.Column("blob_url", sa.String(1000), nullable=True))
    with op.batch_alter_table("case_outcomes") as outcomes:
        outcomes.add_column(sa.Column("output", sa.Text, nullable=True))
        outcomes.add_column(sa.Column("grades", _DOCUMENT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("case_outcomes") as outcomes:
        outcomes.drop_column("grades")
        outcomes.drop_column("output")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("blob_url")
        runs.drop_column("pr_url")
        runs.drop_column("report_markdown")
