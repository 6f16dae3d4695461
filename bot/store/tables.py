"""The durable records: repositories, runs, suite results, per-case outcomes and the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Mutable JSON documents (audit details, metric tables): JSONB on PostgreSQL, JSON text on SQLite.
Document = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 (SQLAlchemy reads it off the class)
        datetime: DateTime(timezone=True),
        dict[str, Any]: Document,
    }


class Repository(Base):
    """A repository evalbot has seen in a job: where nightly schedules are looked for."""

    __tablename__ = "repositories"

    full_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    installation_id: Mapped[int] = mapped_column(Integer)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    # The schedule firing last enqueued: a firing is run once, even if its job crashes.
    last_fire_at: Mapped[datetime | None]


class Run(Base):
    """One evaluation: a pull request's head, a `/eval`, a scheduled re-run or a CLI run."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The run page's address (`/runs/<public_id>`): random, so that pages cannot be counted through.
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    repository: Mapped[str] = mapped_column(String(1000), index=True)
    # GitHub's id of the repository: who may see the run is decided by it, never by the name, which a
    # rename or transfer hands to another repository.
    repository_id: Mapped[int | None] = mapped_column(BigInteger)
    pr_number: Mapped[int | None]
    trigger: Mapped[str] = mapped_column(String(20))  # pull_request, eval_command, scheduled, cli
    base_sha: Mapped[str] = mapped_column(String(200))
    head_sha: Mapped[str] = mapped_column(String(200))
    base_branch: Mapped[str | None] = mapped_column(String(255))
    head_branch: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    verdict: Mapped[str] = mapped_column(String(20))
    calls: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    failed_calls: Mapped[int] = mapped_column(Integer, default=0)
    under_test_usd: Mapped[float] = mapped_column(Float, default=0.0)
    judge_usd: Mapped[float] = mapped_column(Float, default=0.0)
    passed_cases: Mapped[int] = mapped_column(Integer, default=0)
    cost_per_success_usd: Mapped[float | None] = mapped_column(Float)
    # The run page: the report untrimmed, the pull request and the files at the head (for links).
    report_markdown: Mapped[str | None] = mapped_column(Text)
    pr_url: Mapped[str | None] = mapped_column(String(1000))
    blob_url: Mapped[str | None] = mapped_column(String(1000))


class SuiteResult(Base):
    """Every metric of one variant of one suite in a run, and (on the head) the comparison rows."""

    __tablename__ = "suite_results"
    __table_args__ = (Index("ix_suite_results_history", "suite", "branch", "variant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    suite: Mapped[str] = mapped_column(String(255))
    variant: Mapped[str] = mapped_column(String(255))  # base, head, or a model name
    # The commit whose prompt this variant ran, and its branch where known (trends read the default branch).
    sha: Mapped[str] = mapped_column(String(200))
    branch: Mapped[str | None] = mapped_column(String(255))
    prompt_version: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(255))
    # sha256 of the exam: the suite's entry, the judge and the dataset's rows.
    definition_hash: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(20))
    n_cases: Mapped[int] = mapped_column(Integer)
    n_calls: Mapped[int] = mapped_column(Integer)
    n_errors: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float | None] = mapped_column(Float)
    latency_p50_s: Mapped[float | None] = mapped_column(Float)
    latency_p95_s: Mapped[float | None] = mapped_column(Float)
    latency_p99_s: Mapped[float | None] = mapped_column(Float)
    cost_per_1k_usd: Mapped[float | None] = mapped_column(Float)
    cost_per_pct_usd: Mapped[float | None] = mapped_column(Float)
    hallucination_rate: Mapped[float | None] = mapped_column(Float)
    # Everything else the report shows: intervals, rubric means, categories; on the head variant the
    # comparison rows (base, head, delta, interval, p-value, significance, verdict per metric).
    details: Mapped[dict[str, Any]]


class CaseOutcome(Base):
    """One answer to one case (one sample) of one variant."""

    __tablename__ = "case_outcomes"
    __table_args__ = (Index("ix_case_outcomes_run_suite", "run_id", "suite", "variant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    suite: Mapped[str] = mapped_column(String(255))
    variant: Mapped[str] = mapped_column(String(255))
    case_id: Mapped[str] = mapped_column(String(255))
    category: Mapped[str | None] = mapped_column(String(255))
    sample: Mapped[int] = mapped_column(Integer)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    hallucinated: Mapped[bool | None] = mapped_column(Boolean)
    latency_s: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    # The answer and each grader's grade (passed, score, the judge's reason), for the run page.
    output: Mapped[str | None] = mapped_column(Text)
    grades: Mapped[list[dict[str, Any]] | None] = mapped_column(Document)
    # Where the case's row comes from, for a suite with `lineage:`: {"source", "change"} (CaseOrigin).
    origin: Mapped[dict[str, Any] | None] = mapped_column(Document)


class AuditEvent(Base):
    """Append-only (a database trigger refuses UPDATE and DELETE): who did what, when, on which commit."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_repo_pr", "repository", "pr_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repository: Mapped[str] = mapped_column(String(1000))
    pr_number: Mapped[int | None]
    sha: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime]
    details: Mapped[dict[str, Any]]


class WebSession(Base):
    """A signed-in browser: the cookie holds only a random key whose hash is this row's id, so that
    signing out (deleting the row) ends the session wherever the cookie was copied."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie's key
    login: Mapped[str] = mapped_column(String(255), index=True)
    # The user token, encrypted with a key derived from SESSION_SECRET (a copy of the table is no token).
    sealed_token: Mapped[str] = mapped_column(Text)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    # When GitHub's user token expires (or the session's own limit, if sooner).
    expires_at: Mapped[datetime] = mapped_column(index=True)


class FeedbackToken(Base):
    """A repository's token for `POST /api/feedback`: only its sha256 is kept (a copy of the table
    posts nothing), and the feedback schedule's last firing."""

    __tablename__ = "feedback_tokens"

    repository: Mapped[str] = mapped_column(String(1000), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    # The `feedback.merge` firing last enqueued: a firing opens one pull request, even if its job crashes.
    last_merge_fire_at: Mapped[datetime | None]


class FeedbackRecord(Base):
    """One piece of production feedback: a case's input fields, the answer given, and whether it was
    right (or the right answer); proposed to the suite's dataset once, by the pull request it names."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_pending", "repository", "pull_request"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repository: Mapped[str] = mapped_column(String(1000))
    suite: Mapped[str] = mapped_column(String(255))
    # JSON, not JSONB: the fields keep the order they were posted in, as the dataset row will.
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[str] = mapped_column(Text)
    correct: Mapped[bool] = mapped_column(Boolean)
    corrected: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    # The app's pull request that wrote the row into the dataset, and its head commit: the gate trusts
    # that pull request while its head is still the app's commit.
    pull_request: Mapped[int | None]
    merge_sha: Mapped[str | None] = mapped_column(String(200))
    merged_at: Mapped[datetime | None]
