"""Run pages by an unguessable id and by repository id; server-side web sessions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("public_id", sa.String(64), nullable=True))
        runs.add_column(sa.Column("repository_id", sa.BigInteger, nullable=True))
    # Existing runs get their random id too; their repository id is unknown, so their pages stay closed
    # (who may see them cannot be told from a name).
    connection = op.get_bind()
    runs_table = sa.table("runs", sa.column("id", sa.Integer), sa.column("public_id", sa.String))
    for (run_id,) in connection.execute(sa.select(runs_table.c.id)).all():
        connection.execute(
            runs_table.update().where(runs_table.c.id == run_id).values(public_id=secrets.token_urlsafe(18))
        )
    with op.batch_alter_table("runs") as runs:
        runs.alter_column("public_id", existing_type=sa.String(64), nullable=False)
        runs.create_unique_constraint("uq_runs_public_id", ["public_id"])
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("login", sa.String(255), nullable=False, index=True),
        sa.Column("sealed_token", sa.Text, nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("web_sessions")
    with op.batch_alter_table("runs") as runs:
        runs.drop_constraint("uq_runs_public_id", type_="unique")
        runs.drop_column("repository_id")
        runs.drop_column("public_id")
