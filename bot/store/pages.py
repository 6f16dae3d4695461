"""What the web pages read: one run, a page of its cases at a time, base and head answers side by side.

Statuses, filters and the search are worked out here, over the light columns of every case; only the
page's cases are read in full, each text clipped, so a page's size is bounded whatever the run's.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.store.store import RUNNING, Store, _utc
from bot.store.tables import CaseOutcome, Repository, Run, SuiteResult

CaseStatus = Literal["regressed", "fixed", "both_wrong", "both_right", "error", "one_side"]
STATUSES: tuple[CaseStatus, ...] = ("regressed", "fixed", "both_wrong", "error", "both_right", "one_side")
# Cases on one page of a run.
CASES_PER_PAGE = 200
# Characters of an answer, an error or a judge's reason a page shows (the rest is said to be clipped):
# with CASES_PER_PAGE this bounds a page near 2 MB however long the answers are.
MAX_TEXT_CHARS = 2_000
# Characters of the untrimmed report a page shows.
MAX_REPORT_CHARS = 200_000


def clipped(text: str | None, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` cut to `limit` characters, saying how many more there were."""
    if not text or len(text) <= limit:
        return text or ""
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def case_status(base: tuple[bool | None, bool] | None, head: tuple[bool | None, bool] | None) -> CaseStatus:
    """Base against head, each (passed, failed with an error) or None when not run: a failed call
    counts as an error before any verdict."""
    if (base and base[1]) or (head and head[1]):
        return "error"
    if base is None or head is None or base[0] is None or head[0] is None:
        return "one_side"
    if base[0] and not head[0]:
        return "regressed"
    if head[0] and not base[0]:
        return "fixed"
    return "both_right" if head[0] else "both_wrong"


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

    status: CaseStatus
    # Where the case's row comes from (suites with `lineage:`): {"source", "change"}.
    origin: dict[str, Any] | None = None


@dataclass(frozen=True)
class SuiteCases:
    """A suite of the run: its cases on this page, and how many it has and match the filters."""

    name: str
    verdict: str
    base_model: str | None
    head_model: str
    cases: list[CaseRow]
    total: int
    matching: int


@dataclass(frozen=True)
class RunPage:
    id: int
    public_id: str
    repository: str
    repository_id: int | None
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
    categories: list[str]
    # This page of the matching cases (1-based) and how many pages there are.
    page: int
    pages: int


def _answer(outcome: CaseOutcome) -> Answer:
    return Answer(
        clipped(outcome.output),
        outcome.passed,
        outcome.hallucinated,
        outcome.latency_s,
        outcome.cost_usd,
        outcome.cached,
        clipped(outcome.error) or None,
        [
            {**grade, "reason": clipped(grade.get("reason")), "error": clipped(grade.get("error")) or None}
            for grade in outcome.grades or []
        ],
    )


@dataclass
class _Pair:
    category: str | None
    ids: dict[str, int]
    sides: dict[str, tuple[bool | None, bool]]


@dataclass(frozen=True)
class _Indexed:
    """One case of the run's index: what filters read, and the rows to load when it is shown."""

    suite: str
    case_id: str
    sample: int
    category: str | None
    status: CaseStatus
    ids: tuple[int | None, int | None]  # the base and head outcome rows


# Case indexes of recently viewed runs, by (page id, verdict, finished at): a run's cases do not change
# once it has ended, and paging through a 5,000-case run should not pair its 10,000 rows every time.
INDEXES_KEPT = 16
_indexes: OrderedDict[tuple[str, str, datetime], list[_Indexed]] = OrderedDict()
_indexes_lock = threading.Lock()


def _index(session: Session, run: Run) -> list[_Indexed]:
    """Every case of the run, base and head paired by suite, case and sample, with its status."""
    key = (run.public_id, run.verdict, run.finished_at)
    with _indexes_lock:
        if key in _indexes:
            _indexes.move_to_end(key)
            return _indexes[key]
    light = session.execute(
        select(
            CaseOutcome.id,
            CaseOutcome.suite,
            CaseOutcome.variant,
            CaseOutcome.case_id,
            CaseOutcome.sample,
            CaseOutcome.category,
            CaseOutcome.passed,
            CaseOutcome.error.is_not(None),
        )
        .where(CaseOutcome.run_id == run.id, CaseOutcome.variant.in_(("base", "head")))
        .order_by(CaseOutcome.id)
    ).all()
    pairs: dict[tuple[str, str, int], _Pair] = {}
    for row_id, suite, variant, case_id, sample, row_category, passed, failed in light:
        pair = pairs.setdefault((suite, case_id, sample), _Pair(row_category, {}, {}))
        pair.ids[variant] = row_id
        pair.sides[variant] = (passed, bool(failed))
        if variant == "head":
            pair.category = row_category
    index = [
        _Indexed(
            suite,
            case_id,
            sample,
            pair.category,
            case_status(pair.sides.get("base"), pair.sides.get("head")),
            (pair.ids.get("base"), pair.ids.get("head")),
        )
        for (suite, case_id, sample), pair in pairs.items()
    ]
    if run.verdict != RUNNING:
        with _indexes_lock:
            _indexes[key] = index
            while len(_indexes) > INDEXES_KEPT:
                _indexes.popitem(last=False)
    return index


@dataclass(frozen=True)
class RunRef:
    """What decides who may see a run: its repository, by name and by GitHub id."""

    id: int
    repository: str
    repository_id: int | None


def run_ref(store: Store, public_id: str) -> RunRef | None:
    """The run whose page is `/runs/<public_id>`."""
    with store._session() as session:
        row = session.execute(
            select(Run.id, Run.repository, Run.repository_id).where(Run.public_id == public_id)
        ).first()
    return RunRef(*row) if row else None


def run_page(
    store: Store, run_id: int, *, status: str = "", category: str = "", q: str = "", page: int = 1
) -> RunPage | None:
    """Run `run_id` with one page (CASES_PER_PAGE) of the cases matching `status`, `category` and the
    case-id search `q`, base and head answers paired by case and sample; None when there is no such run."""
    with store._session() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        results = session.scalars(
            select(SuiteResult).where(SuiteResult.run_id == run_id).order_by(SuiteResult.id)
        ).all()
        index = _index(session, run)
        needle = q.casefold()
        matching = [
            case
            for case in index
            if (not status or case.status == status)
            and (not category or case.category == category)
            and (not needle or needle in case.case_id.casefold())
        ]
        pages = max(1, -(-len(matching) // CASES_PER_PAGE))
        page = min(max(page, 1), pages)
        shown = matching[(page - 1) * CASES_PER_PAGE : page * CASES_PER_PAGE]
        wanted = [i for case in shown for i in case.ids if i is not None]
        full = {o.id: o for o in session.scalars(select(CaseOutcome).where(CaseOutcome.id.in_(wanted)))}
    names = list(dict.fromkeys(r.suite for r in results))
    totals = Counter(case.suite for case in index)
    matches = Counter(case.suite for case in matching)
    rows: dict[str, list[CaseRow]] = {}
    for case in shown:
        base, head = (full.get(i) if i is not None else None for i in case.ids)
        rows.setdefault(case.suite, []).append(
            CaseRow(
                case.case_id,
                case.category,
                case.sample,
                _answer(base) if base else None,
                _answer(head) if head else None,
                case.status,
                answered.origin if (answered := head or base) else None,
            )
        )
    suites = []
    for name in names:
        models = {r.variant: r.model for r in results if r.suite == name}
        verdict = next(r.verdict for r in results if r.suite == name)
        suites.append(
            SuiteCases(
                name,
                verdict,
                models.get("base"),
                models.get("head", ""),
                rows.get(name, []),
                totals.get(name, 0),
                matches.get(name, 0),
            )
        )
    return RunPage(
        run.id,
        run.public_id,
        run.repository,
        run.repository_id,
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
        clipped(run.report_markdown, MAX_REPORT_CHARS) or None,
        run.pr_url,
        run.blob_url,
        suites,
        sorted({case.category for case in index if case.category}),
        page,
        pages,
    )


def installation_of(store: Store, full_name: str) -> int | None:
    """The installation a job last ran with for the repository (its pages are read as it)."""
    with store._session() as session:
        row = session.get(Repository, full_name)
        return row.installation_id if row else None
