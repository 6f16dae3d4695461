"""Runs, suite results, per-case outcomes, the append-only audit trail and the repositories seen.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")
_WHEN = sa.DateTime(timezone=True)

# The audit trail is the compliance record: the database itself refuses to rewrite it.
_APPEND_ONLY = {
    "postgresql": [
        """CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'audit_events is append-only'; END; $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
        FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()""",
    ],
    "sqlite": [
        """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END""",
        """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END""",
    ],
}


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("full_name", sa.String(200), primary_key=True),
        sa.Column("installation_id", sa.Integer, nullable=False),
        sa.Column("first_seen_at", _WHEN, nullable=False),
        sa.Column("last_seen_at", _WHEN, nullable=False),
        sa.Column("last_fire_at", _WHEN, nullable=True),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("repository", sa.String(1000), nullable=False, index=True),
        sa.Column("pr_number", sa.Integer, nullable=True),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("base_sha", sa.String(200), nullable=False),
        sa.Column("head_sha", sa.String(200), nullable=False),
        sa.Column("base_branch", sa.String(255), nullable=True),
        sa.Column("head_branch", sa.String(255), nullable=True),
        sa.Column("started_at", _WHEN, nullable=False),
        sa.Column("finished_at", _WHEN, nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("failed_calls", sa.Integer, nullable=False),
        sa.Column("under_test_usd", sa.Float, nullable=False),
        sa.Column("judge_usd", sa.Float, nullable=False),
        sa.Column("passed_cases", sa.Integer, nullable=False),
        sa.Column("cost_per_success_usd", sa.Float, nullable=True),
    )
    op.create_table(
        "suite_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("suite", sa.String(255), nullable=False),
        sa.Column("variant", sa.String(255), nullable=False),
        sa.Column("sha", sa.String(200), nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("prompt_version", sa.String(100), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("n_cases", sa.Integer, nullable=False),
        sa.Column("n_calls", sa.Integer, nullable=False),
        sa.Column("n_errors", sa.Integer, nullable=False),
        sa.Column("accuracy", sa.Float, nullable=True),
        sa.Column("latency_p50_s", sa.Float, nullable=True),
        sa.Column("latency_p95_s", sa.Float, nullable=True),
        sa.Column("latency_p99_s", sa.Float, nullable=True),
        sa.Column("cost_per_1k_usd", sa.Float, nullable=True),
        sa.Column("cost_per_pct_usd", sa.Float, nullable=True),
        sa.Column("hallucination_rate", sa.Float, nullable=True),
        sa.Column("details", _DOCUMENT, nullable=False),
    )
    op.create_index("ix_suite_results_history", "suite_results", ["suite", "branch", "variant"])
    op.create_table(
        "case_outcomes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("suite", sa.String(255), nullable=False),
        sa.Column("variant", sa.String(255), nullable=False),
        sa.Column("case_id", sa.String(255), nullable=False),
        sa.Column("category", sa.String(255), nullable=True),
        sa.Column("sample", sa.Integer, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=True),
        sa.Column("hallucinated", sa.Boolean, nullable=True),
        sa.Column("latency_s", sa.Float, nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_case_outcomes_run_suite", "case_outcomes", ["run_id", "suite", "variant"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("repository", sa.String(1000), nullable=False),
        sa.Column("pr_number", sa.Integer, nullable=True),
        sa.Column("sha", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("details", _DOCUMENT, nullable=False),
    )
    op.create_index("ix_audit_events_repo_pr", "audit_events", ["repository", "pr_number"])
    for statement in _APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    for table in ("audit_events", "case_outcomes", "suite_results", "runs", "repositories"):
        op.drop_table(table)
