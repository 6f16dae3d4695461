"""Nightly re-evaluation of the default branch: due `schedule:` firings, fresh runs, drift check and issue."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from croniter import croniter
from githubkit import GitHub
from githubkit.exception import GitHubException

from bot.engine.cache import RedisCache
from bot.engine.metrics import accuracy_of, per_case
from bot.errors import InputError
from bot.github.api.issues import upsert_issue
from bot.github.api.redact import Redactor
from bot.github.api.source import GitHubSource, branch_tip
from bot.github.constants import DRIFT_CHECK, DRIFT_ISSUE_TITLE, scheduled_job_id
from bot.github.context import github_client, publisher_for
from bot.github.state.records import job_store
from bot.github.state.spend import Ledger, spent_usd
from bot.pipeline.compare import MetricRow, SuiteReport, compare_suite
from bot.pipeline.config import Config, Thresholds
from bot.pipeline.files import read_config
from bot.pipeline.render import render_template
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.pipeline.variants import Variant
from bot.store import Store, StoredRun
from bot.store.feedback import proposed_case_ids

log = structlog.get_logger(__name__)

_REASON = "scheduled re-evaluation"


@dataclass(frozen=True)
class Drift:
    """A suite whose metrics moved since the last scheduled run, same prompt and model."""

    suite: SuiteReport  # the previous scheduled run as "base", this one as "head"
    moved: list[str]  # keys of the rows that moved significantly past their threshold
    exam_changed: bool  # the suite's entry, judge or dataset rows differ from the previous run's
    feedback: FeedbackDrop | None = None  # accuracy dropped on the rows merged from production feedback


@dataclass(frozen=True)
class FeedbackDrop:
    """Accuracy on the suite's rows that came from production feedback, in both runs (paired cases)."""

    cases: int
    before: float
    now: float


def feedback_drop(
    store: Store, repository: str, suite: str, before: Variant, now: Variant, thresholds: Thresholds
) -> FeedbackDrop | None:
    """The drop in accuracy on `suite`'s rows merged from feedback (bot/github/flows/feedback.py), when it is
    more than `accuracy_drop_pp`: few rows, so the point estimate decides, as the issue only alerts."""
    ids = proposed_case_ids(store, repository, suite)
    was = per_case([r for r in before.results if r.case_id in ids], accuracy_of)
    is_ = per_case([r for r in now.results if r.case_id in ids], accuracy_of)
    common = [case_id for case_id in is_ if case_id in was]
    if not common:
        return None
    drop = FeedbackDrop(
        len(common), sum(was[c] for c in common) / len(common), sum(is_[c] for c in common) / len(common)
    )
    return drop if (drop.before - drop.now) * 100 > thresholds.accuracy_drop_pp else None


async def default_branch_head(gh: GitHub[Any], owner: str, name: str) -> tuple[str, str]:
    """(default branch, the SHA of its head commit)."""
    branch = str((await gh.arequest("GET", f"/repos/{owner}/{name}")).json()["default_branch"])
    return branch, await branch_tip(gh, owner, name, branch)


def due_firing(cron: str, now: float, first_seen: float, last_fire: float | None) -> float | None:
    """The latest firing of `cron` (UTC) at or before `now` when it is still to run, else None.

    A firing from before evalbot first saw the repository is not run: installing the app at noon does
    not start last night's run at once.
    """
    fire = float(croniter(cron, datetime.fromtimestamp(now, UTC)).get_prev(float))
    if fire <= first_seen or (last_fire is not None and fire <= last_fire):
        return None
    return fire


async def check_schedules(ctx: dict[str, Any], now: float | None = None) -> list[str]:
    """arq cron: enqueue a re-evaluation for each known repository whose default branch's
    `schedule: {cron: ...}` fired since its last run. Returns the repositories enqueued."""
    store = job_store(ctx)
    now = time.time() if now is None else now
    enqueued = []
    for known in await asyncio.to_thread(store.repositories):
        owner, name = known.full_name.split("/", 1)
        try:
            gh = github_client(ctx, known.installation_id)
            _branch, sha = await default_branch_head(gh, owner, name)
            config = await read_config(GitHubSource(gh, owner, name), sha)
        except (GitHubException, InputError) as exc:
            # One repository that cannot be read (uninstalled, a broken config) must not stop the others.
            log.warning("schedule unreadable", repo=known.full_name, error=str(exc))
            continue
        if config is None or config.schedule is None:
            continue
        last_fire = known.last_fire_at.timestamp() if known.last_fire_at else None
        fire = due_firing(config.schedule.cron, now, known.first_seen_at.timestamp(), last_fire)
        if fire is None or not await asyncio.to_thread(store.claim_firing, known.full_name, fire):
            continue
        await ctx["redis"].enqueue_job(
            scheduled_evaluation.__name__,
            _job_id=scheduled_job_id(known.full_name, fire),
            repo=known.full_name,
            installation_id=known.installation_id,
        )
        enqueued.append(known.full_name)
    return enqueued


def moved(row: MetricRow) -> bool:
    """A significant change past the metric's threshold, whichever way it went."""
    return bool(row.significant and row.threshold is not None and row.delta and abs(row.delta) > row.threshold)


def drifts(store: Store, previous: StoredRun, report: Report, thresholds: Thresholds) -> list[Drift]:
    """Suites of `report` whose metrics moved since `previous`, by the pull requests' paired statistics."""
    found = []
    for suite in report.suites:
        before = store.stored_variant(previous.id, suite.name)
        # A new suite, or a prompt or model changed by a merged pull request: a new baseline, not drift.
        if before is None or (before.version, before.model) != (suite.head.version, suite.head.model):
            continue
        comparison = compare_suite(suite.name, [_REASON], before, suite.head, thresholds)
        keys = [row.key for row in comparison.rows if moved(row)]
        dropped = feedback_drop(store, previous.repository, suite.name, before, suite.head, thresholds)
        if keys or dropped:
            exam_changed = store.stored_definition(previous.id, suite.name) != suite.definition_hash
            found.append(Drift(comparison, keys, exam_changed, dropped))
    return found


async def scheduled_evaluation(ctx: dict[str, Any], repo: str, installation_id: int) -> str:
    """Re-evaluate every suite on `repo`'s default branch, calling the models under test afresh; on
    drift since the last scheduled run, a failing `evalbot/drift` check on the branch's head and one
    issue per drifting suite, opened or updated.

    Returns:
        "drift", "stable", "baseline" (no earlier scheduled run), or "not-run" (budget, invalid files).
    """
    settings = ctx["settings"]
    store = job_store(ctx)
    owner, name = repo.split("/", 1)
    gh = github_client(ctx, installation_id)
    started = time.time()
    branch, sha = await default_branch_head(gh, owner, name)
    source = GitHubSource(gh, owner, name)
    try:
        config = await read_config(source, sha) or Config()
        # The installation's runs of the day include its scheduled ones (each firing its own scope).
        ledger = Ledger.of(ctx["redis"], repo, f"scheduled:{sha}:{int(started)}", installation_id, config.budget)
        options = RunOptions(
            run_all=True,
            api_base=settings.EVALBOT_API_BASE,
            concurrency=settings.EVALBOT_CONCURRENCY,
            cache=RedisCache(ctx["redis"]),
            fresh=True,
            reserve=ledger.reserve,
        )
        report = await evaluate(source, sha, sha, options)
        await ledger.settle(spent_usd(report))
    except InputError as exc:
        config, report = Config(), Report(sha, sha, [], errors=[str(exc)])
    previous = await asyncio.to_thread(store.last_run, repo, "scheduled", branch)
    # The run page and the suite chart show runs by the repository's id (a rename keeps it).
    repository_id = int((await gh.arequest("GET", f"/repos/{owner}/{name}")).json()["id"])
    await asyncio.to_thread(
        store.record_run,
        report,
        repository=repo,
        trigger="scheduled",
        started_at=started,
        base_branch=branch,
        head_branch=branch,
        repository_id=repository_id,
    )
    redact = Redactor.for_settings(settings)
    publisher = publisher_for(settings, gh, repo, 0, sha, redact)
    bound = log.bind(repo=repo, sha=sha[:7])
    if report.errors or report.budget_refused or not report.suites:
        outcome = "not-run"
        await asyncio.to_thread(
            store.append_audit, repo, "verdict", "evalbot", sha=sha, trigger="scheduled", verdict=outcome
        )
        if report.errors or report.budget_refused:
            summary = render_template("drift.md.j2", report=report, branch=branch, sha=sha, drifts=[], previous=None)
            check_id = await publisher.ensure_check(DRIFT_CHECK)
            await publisher.complete(check_id, "neutral", "The scheduled re-evaluation did not run", summary)
        bound.info("scheduled run not run", errors=report.errors)
        return outcome
    found = [] if previous is None else await asyncio.to_thread(drifts, store, previous, report, config.thresholds)
    outcome = "baseline" if previous is None else "drift" if found else "stable"
    # Recorded before anything is published: no drift is shown that the trail does not hold.
    await asyncio.to_thread(
        store.append_audit,
        repo,
        "verdict",
        "evalbot",
        sha=sha,
        trigger="scheduled",
        verdict=outcome,
        drifted={d.suite.name: d.moved for d in found},
    )
    if not found:
        bound.info("scheduled run", outcome=outcome)
        return outcome
    assert previous is not None  # drift needs an earlier run
    data = {"report": report, "branch": branch, "sha": sha, "previous": previous.head_sha}
    check_id = await publisher.ensure_check(DRIFT_CHECK)
    title = "Drift on " + ", ".join(d.suite.name for d in found)
    await publisher.complete(check_id, "failure", title, render_template("drift.md.j2", drifts=found, **data))
    for drift in found:
        # Nothing secret is posted: the issue goes through the same redaction as check runs and comments.
        body = redact(render_template("drift.md.j2", drifts=[drift], **data))
        title = redact(DRIFT_ISSUE_TITLE.format(suite=drift.suite.name))
        number, opened = await upsert_issue(gh, owner, name, title, body, settings.APP_ID)
        bound.info("drift issue", suite=drift.suite.name, issue=number, opened=opened)
    return outcome
