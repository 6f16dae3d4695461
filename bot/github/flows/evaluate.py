"""A pull request's evaluation, end to end: the arq job `evaluate_pull_request` on a head SHA checks who
may run it, reads the base's policy, evaluates (progress on the check run), records the run, and
publishes the verdict on the SHA. Its other endings each have a module: cancelled (cancelled.py),
stopped at a rate limit (rate_limited.py), GitHub down at publishing (outbox.py); timed out and crashed
end here."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict
from typing import Any

import structlog
from arq import Retry
from githubkit.exception import GitHubException, RateLimitExceeded

from bot.engine.cache import RedisCache
from bot.errors import BasePolicyError, InputError
from bot.github import metrics
from bot.github.api import ratelimit
from bot.github.api.client import retry_later
from bot.github.api.permissions import has_write_access
from bot.github.api.publish import (
    blob_url,
    cap_annotations,
    comment_body,
    evals_conclusion,
    report_annotations,
    report_markdown,
    report_title,
)
from bot.github.api.source import GitHubSource, get_pull_request, is_fork
from bot.github.constants import EVALS_CHECK, HEAD_SETTLE_DELAYS_S, JOB_TIMEOUT_S, PROGRESS_INTERVAL_S, RETRY_DEFER_S
from bot.github.context import PullRequestJob
from bot.github.flows import outbox, rate_limited
from bot.github.flows.cancelled import aborted, cancel_run
from bot.github.flows.gate import block, publish_sha, read_base
from bot.github.state import aborts, approvals
from bot.github.state.records import run_page_url
from bot.github.state.spend import Ledger, spent_usd
from bot.github.state.verdicts import PullVerdict, shared_by_another, store_verdict
from bot.github.worker import liveness
from bot.pipeline.render import render_template
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.store.feedback import is_feedback_pull
from bot.store.trends import suite_trends

log = structlog.get_logger(__name__)


async def evaluate_pull_request(
    ctx: dict[str, Any],
    repo: str,
    installation_id: int,
    pr_number: int,
    head_sha: str,
    trusted: bool = False,
    only: list[str] | None = None,
    budget_usd: float | None = None,
    models: list[str] | None = None,
) -> str:
    """Evaluate `repo` pull request `pr_number` at `head_sha` against `base_sha` and publish the results.

    Args:
        ctx: arq's context: `settings`, `redis`, and optionally `github_factory` (tests).
        repo: "owner/name".
        installation_id: the app installation that covers the repository.
        pr_number: the pull request.
        head_sha: the head SHA (what is evaluated, and where the checks go). The base is the pull
            request's base branch as it is when the job runs: its policy and its "before" prompts.
        trusted: a writer asked for this run (`/eval`): skip the fork and author checks.
        only: suites to evaluate whether or not they changed (`/eval suite ...`).
        budget_usd: lifts `budget.max_cost_usd` for this run (`/eval --budget`, approvers only).
        models: models to run the head prompt on side by side (`/eval --models`).

    Returns:
        The gate verdict: "pass", "fail", "error"; "untrusted" when waiting for a `/eval`; "crashed"
        when the run could not finish; "no-policy" when the base's `.evalbot.yml` cannot be read.
    """
    job = PullRequestJob.open(ctx, repo, installation_id, pr_number, head_sha)
    bound = log.bind(repo=repo, pr=pr_number, sha=head_sha[:7], job_try=ctx.get("job_try", 1))
    started = time.perf_counter()
    started_at = time.time()
    # The scheduler re-evaluates repositories evalbot has seen.
    await asyncio.to_thread(job.store.note_repository, repo, installation_id)
    trigger = "eval_command" if trusted else "pull_request"
    # The run's page exists from the start: the check runs created now link to it.
    run_id = await asyncio.to_thread(
        job.store.start_run, repository=repo, trigger=trigger, head_sha=head_sha, started_at=started_at, pr=pr_number
    )
    page_id = await asyncio.to_thread(job.store.public_id, run_id)
    job.details_url = run_page_url(job.settings, page_id) or job.details_url
    evals_id: int | None = None
    base_ref: str | None = None
    if await aborted(ctx, job, evals_id, base_ref, run_id):
        # Aborted, yet run again (its worker was lost after the abort): nothing of it is wanted.
        return "cancelled"
    try:
        evals_id = await job.publisher.ensure_check(EVALS_CHECK, job.details_url)
        pull = await _settled_pull(job, pr_number)
        base_ref = pull["base"]["ref"]
        # The run page is shown by the repository's id, which a rename or transfer does not hand on.
        await asyncio.to_thread(job.store.set_repository_id, run_id, int(pull["base"]["repo"]["id"]))
        if pull.get("state") == "closed" or pull["head"]["sha"] != head_sha:
            # A delivery older than the pull request as it is now (late, or redelivered): nothing to
            # evaluate, and nothing to spend.
            closed = pull.get("state") == "closed"
            await cancel_run(job, aborts.Reason(by=None if closed else pull["head"]["sha"]), evals_id, base_ref, run_id)
            return "cancelled"
        # The app's own pull request of production feedback, its head still the app's commit, is as
        # trusted as the feedback the repository's token posted (bot/github/flows/feedback.py).
        if not trusted and not await asyncio.to_thread(is_feedback_pull, job.store, repo, pr_number, head_sha):
            fork = is_fork(pull)
            author = pull["user"]["login"]
            if fork or not await has_write_access(job.gh, job.owner, job.name, author):
                await _wait_for_eval(job, pull, evals_id, fork)
                await asyncio.to_thread(job.store.end_run, run_id, "untrusted")
                return "untrusted"
        try:
            base_sha, base_config = await read_base(job.gh, job.owner, job.name, base_ref)
        except BasePolicyError as exc:
            summary = render_template("no_policy.md.j2", reason=str(exc))
            await block(job, base_ref, "failure", "The base branch's .evalbot.yml cannot be read", summary, str(exc))
            await publish_sha(job, pull, evals_id)
            await asyncio.to_thread(job.store.end_run, run_id, "no-policy")
            return "no-policy"
        if not trusted and await shared_by_another(job.redis, repo, head_sha, pr_number, base_ref) is not None:
            # Another pull request with this head and base was evaluated: its verdict is this one's too
            # (a fork opened at an approved head neither re-runs nor blocks). A `/eval` still runs.
            await publish_sha(job, pull, evals_id)
            await asyncio.to_thread(job.store.end_run, run_id, "shared")
            return "shared"
    except RateLimitExceeded as exc:
        return await rate_limited.stop(job, exc, run_id, evals_id)
    except GitHubException as exc:
        # GitHub still failing after githubkit's own retries, before anything is posted: ask arq to try
        # the whole job again later rather than lose the pull request's check — unless GitHub refused
        # (4xx: permissions, a deleted repository) or the tries are spent, where a retry cannot help.
        if not retry_later(exc, ctx):
            bound.error("cannot reach GitHub; giving up", error=str(exc))
            await asyncio.to_thread(job.store.end_run, run_id, "github-error")
            return "github-error"
        bound.warning("cannot reach GitHub; retrying the job", error=str(exc))
        await asyncio.to_thread(job.store.end_run, run_id, "retried")
        raise Retry(defer=RETRY_DEFER_S * ctx.get("job_try", 1)) from exc
    except asyncio.CancelledError:
        if not liveness.handing_over(ctx):
            await aborted(ctx, job, evals_id, base_ref, run_id)
        raise
    try:
        ledger = Ledger.of(job.redis, repo, pr_number, installation_id, base_config.budget)
        report = await _evaluate(job, evals_id, base_sha, only, budget_usd, models or [], ledger)
        # A run that ends without a report (crashed, cut off) keeps its whole reservation counted. The
        # finished run waits for a restarting Redis to settle, as it does to publish.
        await liveness.until_redis_answers(lambda: ledger.settle(spent_usd(report)), "settle spend")
        trends = await _record(job, report, pull, trigger, started_at, run_id)
        await _publish(job, pull, evals_id, report, trends)
        if job.beat is not None:
            await job.beat.published()
    except asyncio.CancelledError:
        if liveness.handing_over(ctx):
            # SIGTERM: arq puts the job back in the queue; the check run stays open for the next worker.
            await liveness.hand_over(job.publisher, evals_id)
            raise
        if await aborted(ctx, job, evals_id, base_ref, run_id):
            raise
        # The time cap cancels the job: close the check run on the way out (shielded, as the
        # task itself is being cancelled), then let the cancellation go on.
        cap_s = job.beat.cap_s if job.beat is not None else JOB_TIMEOUT_S
        reason = f"the evaluation took longer than its cap of {cap_s:.0f} s"
        summary = render_template("job_failed.md.j2", reason=reason)
        with contextlib.suppress(Exception):
            await asyncio.shield(block(job, base_ref, "timed_out", "evalbot timed out", summary, "it timed out"))
            await asyncio.shield(job.publisher.complete(evals_id, "timed_out", "evalbot timed out", summary))
        metrics.JOBS.labels(result="timed_out").inc()
        raise
    except RateLimitExceeded as exc:
        return await rate_limited.stop(job, exc, run_id, evals_id, base_ref)
    except Exception as exc:
        # Whatever broke, the check run must not stay in progress: say why and stop (no silent retry
        # that would spend the model budget again).
        bound.exception("evaluation failed")
        # Exception text can carry URLs, payloads or provider answers: only its class is posted, the
        # rest stays in the worker's log.
        summary = render_template("job_failed.md.j2", error=type(exc).__name__)
        title = "evalbot could not finish the evaluation"
        await block(job, base_ref, "failure", title, summary, "the evaluation could not finish")
        await job.publisher.complete(evals_id, "failure", title, summary, rerun_button=True)
        metrics.JOBS.labels(result="crashed").inc()
        await asyncio.to_thread(job.store.end_run, run_id, "crashed")
        return "crashed"
    finally:
        metrics.JOB_SECONDS.observe(time.perf_counter() - started)

    metrics.JOBS.labels(result=report.verdict).inc()
    if report.spend is not None:
        metrics.MODEL_CALLS.inc(report.spend.calls)
        metrics.SPEND_USD.inc(report.spend.under_test_usd + report.spend.judge_usd)
    bound.info("evaluation published", verdict=report.verdict)
    return report.verdict


async def _settled_pull(job: PullRequestJob, pr_number: int) -> dict[str, Any]:
    """The pull request as GitHub gives it; asked again for a few seconds while it is closed or its head
    is not the job's commit: GitHub's API can lag a push or a reopen by a moment, and a job must not
    take its own fresh head for a stale one."""
    pull = await get_pull_request(job.gh, job.owner, job.name, pr_number)
    for delay_s in HEAD_SETTLE_DELAYS_S:
        if pull.get("state") != "closed" and pull["head"]["sha"] == job.head_sha:
            break
        await asyncio.sleep(delay_s)
        pull = await get_pull_request(job.gh, job.owner, job.name, pr_number)
    return pull


async def _wait_for_eval(job: PullRequestJob, pull: dict[str, Any], evals_id: int, fork: bool) -> None:
    summary = render_template("untrusted.md.j2", fork=fork, head_sha=job.head_sha)
    await job.audit("awaiting_eval", "evalbot", reason="fork" if fork else "author without write access")
    title = "Waiting for a maintainer's /eval"
    verdict = PullVerdict(job.pr_number, pull["base"]["ref"], "action_required", title, summary, "untrusted")
    await store_verdict(job.redis, job.repo, job.head_sha, verdict)
    await publish_sha(job, pull, evals_id)


async def _evaluate(
    job: PullRequestJob,
    evals_id: int,
    base_sha: str,
    only: list[str] | None,
    budget_usd: float | None,
    models: list[str],
    ledger: Ledger,
) -> Report:
    updates: set[asyncio.Task[None]] = set()
    last_update = float("-inf")
    posted = 0

    def post(title: str, **progress: Any) -> None:
        """Post a progress update unless it would be one too many: every update spends the
        installation's quota, shared by all its pull requests. One in flight, one per interval,
        PROGRESS_MAX_UPDATES per run, fewer or none when the quota runs low."""
        nonlocal last_update, posted
        budget = ratelimit.progress_budget(job.installation_id)
        if updates or posted >= budget or time.monotonic() - last_update < PROGRESS_INTERVAL_S:
            return
        last_update, posted = time.monotonic(), posted + 1
        summary = render_template("progress.md.j2", **progress)
        task = asyncio.create_task(job.publisher.progress(evals_id, title, summary))
        updates.add(task)
        task.add_done_callback(updates.discard)

    def on_progress(done: int, total: int, cached: int) -> None:
        if job.beat is not None:
            job.beat.plan(total)
        if done < total:
            post(f"{done} / {total} calls, {cached} from cache", done=done, total=total, cached=cached)

    post("Evaluating", done=0, total="?", cached=0)
    options = RunOptions(
        only=only or None,
        api_base=job.settings.EVALBOT_API_BASE,
        concurrency=job.settings.EVALBOT_CONCURRENCY,
        cache=RedisCache(job.redis),
        on_progress=on_progress,
        budget_usd=budget_usd,
        models=models,
        reserve=ledger.reserve,
    )
    source = GitHubSource(job.gh, job.owner, job.name)
    try:
        report = await evaluate(source, base_sha, job.head_sha, options)
    except InputError as exc:
        # The pull request's own `.evalbot.yml` cannot be read: invalid files, shown as such.
        report = Report(base_sha, job.head_sha, [], errors=[str(exc)])
    # A progress update still in flight must not land after the final result.
    await asyncio.gather(*updates, return_exceptions=True)
    return report


def _metrics_summary(report: Report) -> dict[str, Any]:
    return {
        suite.name: {row.key: {"base": row.base, "head": row.head, "delta": row.delta} for row in suite.rows[:1]}
        | {"verdict": suite.verdict}
        for suite in report.suites
    }


async def _record(
    job: PullRequestJob,
    report: Report,
    pull_request: dict[str, Any],
    trigger: str,
    started_at: float,
    run_id: int | None = None,
) -> str:
    """Store the run, then the trend charts of its suites on the default branch (Markdown, or "")."""
    base, head = pull_request.get("base") or {}, pull_request.get("head") or {}
    repo_url = (base.get("repo") or {}).get("html_url")
    await asyncio.to_thread(
        job.store.record_run,
        report,
        repository=job.repo,
        trigger=trigger,
        started_at=started_at,
        pr=job.pr_number,
        base_branch=base.get("ref"),
        head_branch=head.get("ref"),
        run_id=run_id,
        pr_url=pull_request.get("html_url") or (f"{repo_url}/pull/{job.pr_number}" if repo_url else None),
        blob_url=blob_url(pull_request, job.head_sha),
    )
    default_branch = (base.get("repo") or {}).get("default_branch")
    if not default_branch or not report.suites:
        return ""
    label = f"#{job.pr_number} {job.head_sha[:7]}"
    trends = await asyncio.to_thread(suite_trends, job.store, job.repo, report, default_branch, label)
    return render_template("trends.md.j2", trends=trends)


async def _publish(job: PullRequestJob, pull: dict[str, Any], evals_id: int, report: Report, trends: str = "") -> None:
    # Redis restarting: the verdicts go there, so the finished run waits for it.
    await liveness.wait_for_redis(job.redis)
    await job.audit("verdict", "evalbot", verdict=report.verdict, metrics=_metrics_summary(report))
    base_ref = pull["base"]["ref"]
    nothing = not (report.suites or report.errors or report.problems or report.policy_error or report.policy_changes)
    if nothing:
        summary = render_template("no_changes.md.j2")
        verdict = PullVerdict(
            job.pr_number, base_ref, "success", "No prompt, config or dataset changed", summary, "not_needed"
        )
        await store_verdict(job.redis, job.repo, job.head_sha, verdict)
        await outbox.deliver(job, pull, evals_id, None)
        return
    markdown = report_markdown(report, blob_url(pull, job.head_sha))
    await approvals.set_gate_notes(job.redis, job.repo, job.pr_number, job.head_sha, _gate_notes(report))
    tradeoffs = [s for s in report.suites if s.models is not None]
    notes, more_notes = cap_annotations(report_annotations(report))
    verdict = PullVerdict(
        job.pr_number,
        base_ref,
        evals_conclusion(report),
        report_title(report),
        markdown,
        "needed",
        suites=[s.name for s in report.suites],
        evals_failed=report.verdict != "pass",
        tradeoffs=render_template("tradeoffs.md.j2", tradeoffs=tradeoffs) if tradeoffs else "",
        notes=notes,
        more_notes=more_notes,
        policy_changes=[asdict(change) for change in report.policy_changes],
    )
    await store_verdict(job.redis, job.repo, job.head_sha, verdict)
    await outbox.deliver(job, pull, evals_id, comment_body(markdown, job.head_sha, job.details_url, trends))


def _gate_notes(report: Report) -> dict[str, Any]:
    return {
        "inconclusive": [asdict(breach) for breach in report.inconclusive],
        "definition_changes": [asdict(change) for change in report.definition_changes],
    }
