"""The store: a synchronous SQLAlchemy engine behind a few functions.

Sync, not SQLAlchemy's async engine: the CLI is synchronous, Alembic is, SQLite needs no extra async
driver, and the worker writes a handful of rows per job, so `asyncio.to_thread` around each call
costs nothing that matters while keeping one code path for every caller.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from bot.engine.graders import Grade
from bot.engine.runner import CaseResult
from bot.pipeline.compare import SuiteReport
from bot.pipeline.lineage import CaseOrigin
from bot.pipeline.redact import Redactor
from bot.pipeline.render import render_full_markdown
from bot.pipeline.run import Report
from bot.pipeline.variants import Variant
from bot.store.tables import AuditEvent, CaseOutcome, Repository, Run, SuiteResult

TRIGGERS = ("pull_request", "eval_command", "scheduled", "cli")
# Characters kept of each text an audit event holds (reasons, command text, logins), and of its details
# as a whole: a comment can be 65,536 characters long, and anyone can write one.
AUDIT_FIELD_CHARS = 1_000
AUDIT_DETAILS_CHARS = 16_000
# Reads return at most this many events, the newest.
AUDIT_READ_LAST = 1_000
# Kinds of audit event that decide a pull request's approval; the latest one counts.
_APPROVAL_KINDS = ("approval", "override", "cancel")
SQLITE_NAME = "evalbot.db"
# The verdict of a run whose job has started and not finished (or never will: it crashed).
RUNNING = "running"
# Random bytes of a run page's id (`/runs/<id>`): 144 bits, base64url, 24 characters.
PUBLIC_ID_BYTES = 18


def new_public_id() -> str:
    return secrets.token_urlsafe(PUBLIC_ID_BYTES)


def database_url(configured: str | None, cache_dir: Path) -> str:
    """The SQLAlchemy URL for `DATABASE_URL` as deployments write it (`postgresql://user@host/db`).

    evalbot picks the driver (psycopg 3); unset, a SQLite file in `cache_dir` (created if need be).
    """
    if not configured:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{cache_dir / SQLITE_NAME}"
    url = make_url(configured)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes: they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _at(timestamp: float | None) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else datetime.now(UTC)


@dataclass(frozen=True)
class Approval:
    """A lead's approval of one head SHA (an override when `evalbot/evals` had failed on it)."""

    sha: str
    approver: str
    reason: str
    override: bool
    at: float
    # The base branch the lead saw the diff against, when the approval recorded one.
    base_ref: str = ""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    repository: str
    pr: int | None
    sha: str
    kind: str
    actor: str
    at: float  # seconds since the epoch, as the report filters take it
    details: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """One flat JSON object: the columns, then the details (reason, verdict, metrics, ...)."""
        return {
            "id": self.id,
            "repository": self.repository,
            "pr": self.pr,
            "sha": self.sha,
            "kind": self.kind,
            "actor": self.actor,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(),
            **self.details,
        }

    def get(self, key: str, default: Any = None) -> Any:
        """A detail by name (templates read `reason` and `verdict` this way)."""
        return self.details.get(key, default)


@dataclass(frozen=True)
class HistoryPoint:
    """One evaluation of a suite on a branch: the commit, when, and the trend's two numbers."""

    sha: str
    at: datetime
    accuracy: float | None
    cost_per_1k_usd: float | None
    run_id: int
    latency_p95_s: float | None = None
    hallucination_rate: float | None = None
    trigger: str = ""
    # The run page's id (`/runs/<public_id>`).
    public_id: str = ""


@dataclass(frozen=True)
class StoredRun:
    id: int
    repository: str
    trigger: str
    head_sha: str
    finished_at: datetime
    verdict: str


@dataclass(frozen=True)
class KnownRepository:
    full_name: str
    installation_id: int
    first_seen_at: datetime
    last_fire_at: datetime | None


class Store:
    """Runs, results and the audit trail in one database. Every method is one transaction.

    Every text written (answers, errors, judges' reasons, the report, audit details) passes `redact`
    first: what the check run hid is not kept for a page to show.
    """

    def __init__(self, engine: Engine, redact: Callable[[str], str] | None = None):
        self.engine = engine
        self.redact = redact or Redactor.for_settings()
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # Audit trail

    def append_audit(
        self,
        repository: str,
        kind: str,
        actor: str,
        *,
        pr: int | None = None,
        sha: str = "",
        at: float | None = None,
        **details: Any,
    ) -> AuditEntry:
        """Append one event (kind: verdict, approval, override, cancel, eval_requested, refused, ...).

        Every text is clipped (AUDIT_FIELD_CHARS; the details as a whole AUDIT_DETAILS_CHARS).
        """
        clipped = _clip_texts(details, self.redact)
        if len(json.dumps(clipped, default=str)) > AUDIT_DETAILS_CHARS:
            clipped = {"clipped": json.dumps(clipped, sort_keys=True, default=str)[: AUDIT_DETAILS_CHARS - 100]}
        row = AuditEvent(
            repository=repository,
            pr_number=pr,
            sha=_clip(sha),
            kind=_clip(kind),
            actor=_clip(actor),
            at=_at(at),
            details=json.loads(json.dumps(clipped, default=str)),
        )
        with self._session() as session:
            session.add(row)
            session.flush()
            return _entry(row)

    def audit_entries(self, repository: str, pr: int | None = None, last: int = AUDIT_READ_LAST) -> list[AuditEntry]:
        """The newest `last` events of the repository (of one pull request when `pr` is given), oldest first."""
        query = select(AuditEvent).where(AuditEvent.repository == repository)
        if pr is not None:
            query = query.where(AuditEvent.pr_number == pr)
        query = query.order_by(AuditEvent.id.desc()).limit(last)
        with self._session() as session:
            return [_entry(row) for row in reversed(session.scalars(query).all())]

    def approval(self, repository: str, pr: int, sha: str, base_ref: str | None = None) -> Approval | None:
        """The approval of `sha`, read from the trail: the latest approval, override or cancel decides, and
        an approval of another SHA (before a push) does not count, nor, when `base_ref` is given, one
        recorded against another base branch (before a retarget)."""
        query = (
            select(AuditEvent)
            .where(
                AuditEvent.repository == repository,
                AuditEvent.pr_number == pr,
                AuditEvent.kind.in_(_APPROVAL_KINDS),
            )
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
        with self._session() as session:
            latest = session.scalars(query).first()
        if latest is None or latest.kind == "cancel" or latest.sha != sha:
            return None
        recorded_base = str(latest.details.get("base_ref") or "")
        if base_ref is not None and recorded_base != base_ref:
            return None
        reason = str(latest.details.get("reason") or "")
        at = _utc(latest.at).timestamp()
        return Approval(latest.sha, latest.actor, reason, latest.kind == "override", at, recorded_base)

    # Runs and results

    def start_run(
        self,
        *,
        repository: str,
        trigger: str,
        head_sha: str,
        started_at: float,
        pr: int | None = None,
        repository_id: int | None = None,
    ) -> int:
        """A run row before its results (verdict "running"): its page exists from the moment check runs
        link to it; `record_run(run_id=...)` fills it in. Its id (the page's is `public_id(id)`)."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, not {trigger!r}")
        when = _at(started_at)
        run = Run(
            public_id=new_public_id(),
            repository=repository,
            repository_id=repository_id,
            pr_number=pr,
            trigger=trigger,
            base_sha="",
            head_sha=head_sha,
            started_at=when,
            finished_at=when,
            verdict=RUNNING,
        )
        with self._session() as session:
            session.add(run)
            session.flush()
            return run.id

    def public_id(self, run_id: int) -> str | None:
        """The id in the run page's address."""
        with self._session() as session:
            run = session.get(Run, run_id)
            return run.public_id if run else None

    def set_repository_id(self, run_id: int, repository_id: int) -> None:
        """Record GitHub's id of the run's repository once known: its page is shown by it."""
        with self._session() as session:
            run = session.get(Run, run_id)
            if run is not None:
                run.repository_id = repository_id

    def end_run(self, run_id: int, verdict: str, at: float | None = None) -> None:
        """Close a started run that ends without results (untrusted, no policy, crashed, retried); a run
        already recorded keeps its verdict."""
        with self._session() as session:
            run = session.get(Run, run_id)
            if run is not None and run.verdict == RUNNING:
                run.verdict, run.finished_at = verdict, _at(at)

    def record_run(
        self,
        report: Report,
        *,
        repository: str,
        trigger: str,
        started_at: float,
        finished_at: float | None = None,
        pr: int | None = None,
        base_branch: str | None = None,
        head_branch: str | None = None,
        run_id: int | None = None,
        pr_url: str | None = None,
        blob_url: str | None = None,
        repository_id: int | None = None,
    ) -> int:
        """Store a run with every suite's metrics, comparison rows, per-case answers and grades, and the
        untrimmed report; its id. With `run_id`, the row `start_run` made is filled in."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, not {trigger!r}")
        spend = report.spend
        values: dict[str, Any] = {
            "repository": repository,
            "pr_number": pr,
            "trigger": trigger,
            "base_sha": report.base_ref,
            "head_sha": report.head_ref,
            "base_branch": base_branch,
            "head_branch": head_branch,
            "started_at": _at(started_at),
            "finished_at": _at(finished_at),
            "verdict": report.verdict,
            "calls": spend.calls if spend else 0,
            "retries": spend.retries if spend else 0,
            "failed_calls": spend.errors if spend else 0,
            "under_test_usd": spend.under_test_usd if spend else 0.0,
            "judge_usd": spend.judge_usd if spend else 0.0,
            "passed_cases": spend.passed_answers if spend else 0,
            "cost_per_success_usd": spend.per_success_usd if spend else None,
            "report_markdown": self.redact(render_full_markdown(report, blob_url)),
            "pr_url": pr_url,
            "blob_url": blob_url,
        }
        with self._session() as session:
            run = session.get(Run, run_id) if run_id is not None else None
            if repository_id is not None:
                values["repository_id"] = repository_id
            if run is None:
                run = Run(public_id=new_public_id(), **values)
                session.add(run)
            else:
                for key, value in values.items():
                    setattr(run, key, value)
            session.flush()
            origins = {check.suite: check.origins for check in report.lineage}
            for suite in report.suites:
                for name, variant in _variants(suite).items():
                    on_base = name == "base"
                    sha = report.base_ref if on_base else report.head_ref
                    branch = base_branch if on_base else head_branch
                    session.add(_suite_result(run.id, suite, name, variant, sha, branch))
                    if variant.results:
                        # Plain rows, not ORM objects: a 1,000-case run's answers take half the memory
                        # and a third of the CPU to write, with no identity map to keep them in.
                        session.execute(
                            insert(CaseOutcome),
                            _outcomes(
                                run.id, suite.name, name, variant.results, self.redact, origins.get(suite.name, {})
                            ),
                        )
            return run.id

    def suite_history(
        self, repository: str, suite: str, branch: str, n: int = 20, repository_id: int | None = None
    ) -> list[HistoryPoint]:
        """The last `n` evaluations of `suite` on `branch`, oldest first, one per commit (its latest);
        with `repository_id`, only runs recorded with that GitHub repository id (not another repository
        that had the name before a rename or transfer).

        A pull request's base variant counts (it ran the branch's prompt), and so does a scheduled run.
        """
        query = (
            select(SuiteResult, Run.finished_at, Run.trigger, Run.public_id)
            .join(Run, Run.id == SuiteResult.run_id)
            .where(
                Run.repository == repository,
                SuiteResult.suite == suite,
                SuiteResult.branch == branch,
                SuiteResult.variant.in_(("base", "head")),
            )
            .order_by(Run.finished_at, Run.id)
        )
        if repository_id is not None:
            query = query.where(Run.repository_id == repository_id)
        latest: dict[str, HistoryPoint] = {}
        with self._session() as session:
            for result, finished_at, trigger, public_id in session.execute(query).all():
                latest.pop(result.sha, None)  # re-inserted last: ordered by its latest evaluation
                latest[result.sha] = HistoryPoint(
                    result.sha,
                    _utc(finished_at),
                    result.accuracy,
                    result.cost_per_1k_usd,
                    result.run_id,
                    result.latency_p95_s,
                    result.hallucination_rate,
                    trigger,
                    public_id,
                )
        return list(latest.values())[-n:]

    def last_run(self, repository: str, trigger: str, head_branch: str | None = None) -> StoredRun | None:
        query = select(Run).where(Run.repository == repository, Run.trigger == trigger, Run.verdict != RUNNING)
        if head_branch is not None:
            query = query.where(Run.head_branch == head_branch)
        with self._session() as session:
            run = session.scalars(query.order_by(Run.id.desc()).limit(1)).first()
        if run is None:
            return None
        return StoredRun(run.id, run.repository, run.trigger, run.head_sha, _utc(run.finished_at), run.verdict)

    def latest_run_id(self, repository: str, pr: int, head_sha: str) -> int | None:
        """The newest run of pull request `pr` on `head_sha`, finished or not: where checks published
        later (an approval, a re-run of the approval check) link to."""
        query = select(Run.id).where(Run.repository == repository, Run.pr_number == pr, Run.head_sha == head_sha)
        with self._session() as session:
            return session.scalars(query.order_by(Run.id.desc()).limit(1)).first()

    def stored_variant(self, run_id: int, suite: str, variant: str = "head") -> Variant | None:
        """A variant of a stored run rebuilt for `compare_suite`: the same paired statistics apply."""
        with self._session() as session:
            result = session.scalars(
                select(SuiteResult).where(
                    SuiteResult.run_id == run_id, SuiteResult.suite == suite, SuiteResult.variant == variant
                )
            ).first()
            if result is None:
                return None
            outcomes = session.scalars(
                select(CaseOutcome)
                .where(CaseOutcome.run_id == run_id, CaseOutcome.suite == suite, CaseOutcome.variant == variant)
                .order_by(CaseOutcome.id)
            ).all()
            results = [_case_result(o) for o in outcomes]
        return Variant(variant, result.prompt_version, result.model, results)

    def stored_definition(self, run_id: int, suite: str, variant: str = "head") -> str | None:
        with self._session() as session:
            return session.scalars(
                select(SuiteResult.definition_hash).where(
                    SuiteResult.run_id == run_id, SuiteResult.suite == suite, SuiteResult.variant == variant
                )
            ).first()

    # Repositories and schedules

    def note_repository(self, full_name: str, installation_id: int, at: float | None = None) -> None:
        """Remember a repository a job ran for: the scheduler looks at these.

        One upsert statement: two jobs of a new repository may note it at the same moment.
        """
        when = _at(at)
        dialect_insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        statement = (
            dialect_insert(Repository)
            .values(full_name=full_name, installation_id=installation_id, first_seen_at=when, last_seen_at=when)
            .on_conflict_do_update(
                index_elements=[Repository.full_name],
                set_={"installation_id": installation_id, "last_seen_at": when},
            )
        )
        with self._session() as session:
            session.execute(statement)

    def repositories(self) -> list[KnownRepository]:
        with self._session() as session:
            rows = session.scalars(select(Repository).order_by(Repository.full_name)).all()
            return [
                KnownRepository(
                    r.full_name,
                    r.installation_id,
                    _utc(r.first_seen_at),
                    _utc(r.last_fire_at) if r.last_fire_at else None,
                )
                for r in rows
            ]

    def claim_firing(self, full_name: str, fire_at: float) -> bool:
        """Mark a schedule firing as taken; False when it (or a later one) already was."""
        when = _at(fire_at)
        with self._session() as session:
            row = session.get(Repository, full_name, with_for_update=True)
            if row is None or (row.last_fire_at is not None and _utc(row.last_fire_at) >= when):
                return False
            row.last_fire_at = when
            return True


def _clip(text: str, limit: int = AUDIT_FIELD_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_texts(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return _clip(redact(value))
    if isinstance(value, dict):
        return {_clip(str(k)): _clip_texts(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clip_texts(v, redact) for v in value]
    return value


def _entry(row: AuditEvent) -> AuditEntry:
    at = _utc(row.at).timestamp()
    return AuditEntry(row.id, row.repository, row.pr_number, row.sha, row.kind, row.actor, at, row.details)


def _variants(suite: SuiteReport) -> dict[str, Variant]:
    """Every variant a suite ran: head, base, and each other model (the head's own model once)."""
    found: dict[str, Variant] = {"head": suite.head}
    if suite.base is not None:
        found["base"] = suite.base
    for column in suite.models.columns if suite.models else []:
        if column.variant is not suite.head:
            found.setdefault(column.model, column.variant)
    return found


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def _suite_result(
    run_id: int, suite: SuiteReport, name: str, variant: Variant, sha: str, branch: str | None
) -> SuiteResult:
    m = variant.metrics
    details: dict[str, Any] = {
        "accuracy_interval": _plain(m.accuracy_interval),
        "hallucination_interval": _plain(m.hallucination_interval),
        "rubric_means": m.rubric_means,
        "categories": [_plain(c) for c in m.categories],
        "grader_errors": m.grader_errors,
        "n_cached": m.n_cached,
    }
    if name == "head":
        details["comparison"] = [_plain(row) for row in suite.rows]
        details["paired_cases"] = suite.paired_cases
        details["min_detectable_drop_pp"] = suite.min_detectable_drop_pp
    return SuiteResult(
        run_id=run_id,
        suite=suite.name,
        variant=name,
        sha=sha,
        branch=branch,
        prompt_version=variant.version,
        model=variant.model,
        definition_hash=suite.definition_hash,
        verdict=suite.verdict,
        n_cases=m.n_cases,
        n_calls=m.n_calls,
        n_errors=m.n_errors,
        accuracy=m.accuracy,
        latency_p50_s=m.latency_p50_s,
        latency_p95_s=m.latency_p95_s,
        latency_p99_s=m.latency_p99_s,
        cost_per_1k_usd=m.cost_per_1k_usd,
        cost_per_pct_usd=m.cost_per_pct_usd,
        hallucination_rate=m.hallucination_rate,
        details=json.loads(json.dumps(details, default=str)),
    )


def _outcomes(
    run_id: int,
    suite: str,
    variant: str,
    results: list[CaseResult],
    redact: Callable[[str], str],
    origins: dict[str, CaseOrigin],
) -> list[dict[str, Any]]:
    return [
        dict(
            run_id=run_id,
            suite=suite,
            variant=variant,
            case_id=r.case_id,
            category=r.category,
            sample=r.sample,
            passed=r.passed,
            hallucinated=r.hallucinated,
            latency_s=r.latency_s,
            cost_usd=r.cost_usd,
            cached=r.cached,
            error=redact(r.error) if r.error else r.error,
            output=redact(r.output) if r.output else r.output,
            grades=[_grade(g, redact) for g in r.grades],
            origin=_origin(origins.get(r.case_id), redact),
        )
        for r in results
    ]


def _origin(origin: CaseOrigin | None, redact: Callable[[str], str]) -> dict[str, Any] | None:
    if origin is None:
        return None
    return {"source": redact(origin.source) if origin.source else origin.source, "change": origin.change}


def _grade(grade: Grade, redact: Callable[[str], str]) -> dict[str, Any]:
    return {
        "grader": grade.grader,
        "kind": grade.kind,
        "passed": grade.passed,
        "score": grade.score,
        "scores": grade.scores,
        "reason": redact(grade.reason) if grade.reason else grade.reason,
        "error": redact(grade.error) if grade.error else grade.error,
    }


def _case_result(outcome: CaseOutcome) -> CaseResult:
    """A stored outcome as a result the metrics read: its verdicts become one grade of each kind."""
    grades = []
    if outcome.passed is not None:
        grades.append(Grade("stored", "accuracy", outcome.passed))
    if outcome.hallucinated is not None:
        grades.append(Grade("stored", "hallucination", not outcome.hallucinated))
    return CaseResult(
        outcome.case_id,
        outcome.category,
        outcome.sample,
        latency_s=outcome.latency_s,
        cost_usd=outcome.cost_usd,
        cached=outcome.cached,
        error=outcome.error,
        grades=tuple(grades),
    )


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        # Foreign keys are off by default in SQLite; WAL lets the CLI read while a worker writes.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


def open_store(url: str) -> Store:
    """A store on `url` (a SQLAlchemy URL, see `database_url`); run `migrate` first on a new database."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    return Store(engine)
