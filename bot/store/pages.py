"""What the web pages read: one run with every case's answers side by side."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from bot.store.store import Store, _utc
from bot.store.tables import CaseOutcome, Repository, Run, SuiteResult

CaseStatus = Literal["regressed", "fixed", "both_wrong", "both_right", "error", "one_side"]
STATUSES: tuple[CaseStatus, ...] = ("regressed", "fixed", "both_wrong", "error", "both_right", "one_side")


@dataclass(frozen=True)
class Answer:
    """One variant's answer to one sample of a case, with its grades as stored."""

    output: str
    passed: bool | None
    hallucinated: bool | None
    latency_s: float | None
    cost_usd: float | None
    cached: bool
    error: str | None
    grades: list[dict[str, Any]]


@dataclass(frozen=True)
class CaseRow:
    case_id: str
    category: str | None
    sample: int
    base: Answer | None
    head: Answer | None

    @property
    def status(self) -> CaseStatus:
        """Base against head: a failed call counts as an error before any verdict."""
        if (self.base and self.base.error) or (self.head and self.head.error):
            return "error"
        if self.base is None or self.head is None or self.base.passed is None or self.head.passed is None:
            return "one_side"
        if self.base.passed and not self.head.passed:
            return "regressed"
        if self.head.passed and not self.base.passed:
            return "fixed"
        return "both_right" if self.head.passed else "both_wrong"


@dataclass(frozen=True)
class SuiteCases:
    name: str
    verdict: str
    base_model: str | None
    head_model: str
    cases: list[CaseRow]


@dataclass(frozen=True)
class RunPage:
    id: int
    repository: str
    pr: int | None
    trigger: str
    base_sha: str
    head_sha: str
    base_branch: str | None
    head_branch: str | None
    started_at: datetime
    finished_at: datetime
    verdict: str
    under_test_usd: float
    judge_usd: float
    markdown: str | None
    pr_url: str | None
    blob_url: str | None
    suites: list[SuiteCases]


def _answer(outcome: CaseOutcome) -> Answer:
    return Answer(
        outcome.output or "",
        outcome.passed,
        outcome.hallucinated,
        outcome.latency_s,
        outcome.cost_usd,
        outcome.cached,
        outcome.error,
        list(outcome.grades or []),
    )


def run_page(store: Store, run_id: int) -> RunPage | None:
    """Run `run_id` with each suite's cases, base and head answers paired by case and sample; None when
    there is no such run."""
    with store._session() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        results = session.scalars(
            select(SuiteResult).where(SuiteResult.run_id == run_id).order_by(SuiteResult.id)
        ).all()
        outcomes = session.scalars(
            select(CaseOutcome)
            .where(CaseOutcome.run_id == run_id, CaseOutcome.variant.in_(("base", "head")))
            .order_by(CaseOutcome.id)
        ).all()
    suites = []
    for name in dict.fromkeys(r.suite for r in results):
        models = {r.variant: r.model for r in results if r.suite == name}
        verdict = next(r.verdict for r in results if r.suite == name)
        pairs: dict[tuple[str, int], dict[str, CaseOutcome]] = {}
        for outcome in outcomes:
            if outcome.suite == name:
                pairs.setdefault((outcome.case_id, outcome.sample), {})[outcome.variant] = outcome
        cases = []
        for (case_id, sample), sides in pairs.items():
            either = sides.get("head") or sides["base"]
            base, head = sides.get("base"), sides.get("head")
            cases.append(
                CaseRow(
                    case_id,
                    either.category,
                    sample,
                    _answer(base) if base else None,
                    _answer(head) if head else None,
                )
            )
        suites.append(SuiteCases(name, verdict, models.get("base"), models.get("head", ""), cases))
    return RunPage(
        run.id,
        run.repository,
        run.pr_number,
        run.trigger,
        run.base_sha,
        run.head_sha,
        run.base_branch,
        run.head_branch,
        _utc(run.started_at),
        _utc(run.finished_at),
        run.verdict,
        run.under_test_usd,
        run.judge_usd,
        run.report_markdown,
        run.pr_url,
        run.blob_url,
        suites,
    )


def installation_of(store: Store, full_name: str) -> int | None:
    """The installation a job last ran with for the repository (its pages are read as it)."""
    with store._session() as session:
        row = session.get(Repository, full_name)
        return row.installation_id if row else None
