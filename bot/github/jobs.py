"""arq jobs: evaluate a pull request's head SHA and publish the checks and the sticky comment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, ClassVar

import structlog
from arq import Retry
from arq.connections import RedisSettings
from githubkit.exception import GitHubException

from bot.engine.cache import RedisCache
from bot.github import metrics
from bot.github.client import installation_client
from bot.github.constants import (
    APPROVAL_CHECK,
    EVALS_CHECK,
    JOB_MAX_TRIES,
    JOB_TIMEOUT_S,
    PROGRESS_INTERVAL_S,
    RETRY_DEFER_S,
)
from bot.github.publish import Publisher, comment_body, evals_conclusion, report_markdown, report_title
from bot.github.source import GitHubSource
from bot.pipeline.render import render_template
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.settings import Settings, get_settings

log = structlog.get_logger(__name__)

ClientFactory = Callable[[Settings, int], Any]


async def evaluate_pull_request(
    ctx: dict[str, Any], repo: str, installation_id: int, pr_number: int, base_sha: str, head_sha: str
) -> str:
    """Evaluate `repo` pull request `pr_number` at `head_sha` against `base_sha` and publish the results.

    Args:
        ctx: arq's context: `settings`, `redis`, and optionally `github_factory` (tests).
        repo: "owner/name".
        installation_id: the app installation that covers the repository.
        pr_number: the pull request.
        base_sha: the base branch's SHA (policy and "before" prompts).
        head_sha: the head SHA (what is evaluated, and where the checks go).

    Returns:
        The gate verdict: "pass", "fail", "error", or "crashed" when the run could not finish.
    """
    settings: Settings = ctx["settings"]
    factory: ClientFactory = ctx.get("github_factory", installation_client)
    owner, name = repo.split("/", 1)
    gh = factory(settings, installation_id)
    details_url = f"{settings.PUBLIC_URL.rstrip('/')}/" if settings.PUBLIC_URL else None
    publisher = Publisher(gh, owner, name, pr_number, head_sha)
    bound = log.bind(repo=repo, pr=pr_number, sha=head_sha[:7], job_try=ctx.get("job_try", 1))
    started = time.perf_counter()

    try:
        evals_id = await publisher.ensure_check(EVALS_CHECK, details_url)
    except GitHubException as exc:
        # GitHub still failing after githubkit's own retries: nothing is posted yet, so ask arq to try
        # the whole job again later rather than lose the pull request's check.
        bound.warning("cannot create the check run; retrying the job", error=str(exc))
        raise Retry(defer=RETRY_DEFER_S * ctx.get("job_try", 1)) from exc
    try:
        report = await _evaluate(ctx, settings, publisher, evals_id, gh, owner, name, pr_number, base_sha, head_sha)
    except Exception as exc:
        # Whatever broke, the check run must not stay in progress: say why and stop (no silent retry
        # that would spend the model budget again).
        bound.exception("evaluation failed")
        reason = f"{type(exc).__name__}: {exc}"
        summary = render_template("job_failed.md.j2", reason=reason)
        await publisher.complete(evals_id, "failure", "evalbot could not finish the evaluation", summary)
        metrics.JOBS.labels(result="crashed").inc()
        return "crashed"
    finally:
        metrics.JOB_SECONDS.observe(time.perf_counter() - started)

    await _publish(publisher, evals_id, report, head_sha, details_url)
    metrics.JOBS.labels(result=report.verdict).inc()
    if report.spend is not None:
        metrics.MODEL_CALLS.inc(report.spend.calls)
        metrics.SPEND_USD.inc(report.spend.under_test_usd + report.spend.judge_usd)
    bound.info("evaluation published", verdict=report.verdict)
    return report.verdict


async def _evaluate(
    ctx: dict[str, Any],
    settings: Settings,
    publisher: Publisher,
    evals_id: int,
    gh: Any,
    owner: str,
    name: str,
    pr_number: int,
    base_sha: str,
    head_sha: str,
) -> Report:
    updates: set[asyncio.Task[None]] = set()
    last_update = 0.0

    def on_progress(done: int, total: int, cached: int) -> None:
        nonlocal last_update
        now = time.monotonic()
        # At most one update in flight and one per interval: GitHub rate-limits check-run writes.
        if updates or now - last_update < PROGRESS_INTERVAL_S:
            return
        last_update = now
        summary = render_template("progress.md.j2", done=done, total=total, cached=cached)
        task = asyncio.create_task(
            publisher.progress(evals_id, f"{done} / {total} calls, {cached} from cache", summary)
        )
        updates.add(task)
        task.add_done_callback(updates.discard)

    await publisher.progress(evals_id, "Evaluating", render_template("progress.md.j2", done=0, total="?", cached=0))
    options = RunOptions(
        api_base=settings.EVALBOT_API_BASE,
        concurrency=settings.EVALBOT_CONCURRENCY,
        cache=RedisCache(ctx["redis"]),
        on_progress=on_progress,
    )
    report = await evaluate(GitHubSource(gh, owner, name, pr_number), base_sha, head_sha, options)
    # A progress update still in flight must not land after the final result.
    await asyncio.gather(*updates, return_exceptions=True)
    return report


async def _publish(publisher: Publisher, evals_id: int, report: Report, head_sha: str, details_url: str | None) -> None:
    approval_id = await publisher.ensure_check(APPROVAL_CHECK, details_url)
    if not report.suites and not report.errors and not report.problems:
        summary = render_template("no_changes.md.j2")
        await publisher.complete(evals_id, "success", "No prompt, config or dataset changed", summary)
        approval = render_template("approval.md.j2", waiting=False)
        await publisher.complete(approval_id, "success", "No AI artefact changed", approval)
        return
    markdown = report_markdown(report)
    await publisher.complete(evals_id, evals_conclusion(report), report_title(report), markdown)
    approval = render_template(
        "approval.md.j2",
        waiting=True,
        head_sha=head_sha,
        suites=[suite.name for suite in report.suites],
        evals_failed=report.verdict != "pass",
        approvers=report.approvers,
    )
    await publisher.complete(approval_id, "action_required", "Waiting for a lead's /approve", approval)
    await publisher.upsert_comment(comment_body(markdown, head_sha, details_url))


async def _startup(ctx: dict[str, Any]) -> None:
    ctx.setdefault("settings", get_settings())


class WorkerSettings:
    """`arq bot.github.jobs.WorkerSettings`, or `evalbot worker`."""

    functions: ClassVar[list[Any]] = [evaluate_pull_request]
    on_startup = _startup
    job_timeout = JOB_TIMEOUT_S
    max_tries = JOB_MAX_TRIES
    redis_settings = RedisSettings.from_dsn(get_settings().REDIS_URL)
