"""arq jobs: evaluate a pull request's head SHA and publish; act on slash commands and check buttons."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from arq import Retry
from arq.worker import func
from githubkit.exception import GitHubException, RateLimitExceeded, RequestFailed

from bot.engine.cache import RedisCache
from bot.errors import BasePolicyError, InputError
from bot.github import metrics
from bot.github.state import aborts as cancel
from bot.github.worker import liveness
from bot.github.flows import outbox
from bot.github.api import ratelimit
from bot.github.state import approvals as state
from bot.github.api.client import retry_later
from bot.github.flows.command_line import RERUN_RAW, Command, Refusal
from bot.github.constants import (
    EVALS_CHECK,
    HEAD_KEY,
    HEAD_SETTLE_DELAYS_S,
    HEAD_TTL_S,
    JOB_TIMEOUT_S,
    PROGRESS_INTERVAL_S,
    RETRY_DEFER_S,
    SHORT_JOB_TIMEOUT_S,
    eval_job_id,
)
from bot.github.context import PullRequestJob, github_client
from bot.github.flows.gate import PullVerdict, publish_sha, read_base, shared_by_another, store_verdict, verdict_for
from bot.github.api.permissions import has_write_access, is_approver, missing_permissions
from bot.github.api.publish import (
    Conclusion,
    blob_url,
    cap_annotations,
    comment_body,
    evals_conclusion,
    report_annotations,
    report_markdown,
    report_title,
)
from bot.github.state.records import run_page_url
from bot.github.api.source import GitHubSource, get_pull_request, is_fork, open_pulls_with_head
from bot.github.state.spend import Ledger, spent_usd
from bot.pipeline.config import Config, model_refusal
from bot.pipeline.files import read_config
from bot.pipeline.render import render_template
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.store.feedback import is_feedback_pull
from bot.store.trends import suite_trends

log = structlog.get_logger(__name__)


async def _base_policy(job: PullRequestJob, base_ref: str) -> Config:
    """`.evalbot.yml` of the base branch as it is now: who approves is never read from the pull request.

    Raises:
        BasePolicyError: the base's file cannot be read or parsed.
    """
    return (await read_base(job.gh, job.owner, job.name, base_ref))[1]


async def _fail(
    job: PullRequestJob, base_ref: str, conclusion: Conclusion, title: str, summary: str, reason: str
) -> None:
    """Keep this pull request's verdict on the SHA when it cannot pass: another pull request with the
    same head must not publish a pass over it."""
    verdict = PullVerdict(job.pr_number, base_ref, conclusion, title, summary, "blocked", reason=reason)
    await store_verdict(job.redis, job.repo, job.head_sha, verdict)


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
    if await _aborted(ctx, job, evals_id, base_ref, run_id):
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
            await _cancel(job, cancel.Reason(by=None if closed else pull["head"]["sha"]), evals_id, base_ref, run_id)
            return "cancelled"
        # The app's own pull request of production feedback, its head still the app's commit, is as
        # trusted as the feedback the repository's token posted (bot/github/feedback.py).
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
            await _fail(job, base_ref, "failure", "The base branch's .evalbot.yml cannot be read", summary, str(exc))
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
        return await _rate_limited(job, exc, run_id, evals_id)
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
            await _aborted(ctx, job, evals_id, base_ref, run_id)
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
        if await _aborted(ctx, job, evals_id, base_ref, run_id):
            raise
        # The time cap cancels the job: close the check run on the way out (shielded, as the
        # task itself is being cancelled), then let the cancellation go on.
        cap_s = job.beat.cap_s if job.beat is not None else JOB_TIMEOUT_S
        reason = f"the evaluation took longer than its cap of {cap_s:.0f} s"
        summary = render_template("job_failed.md.j2", reason=reason)
        with contextlib.suppress(Exception):
            await asyncio.shield(_fail(job, base_ref, "timed_out", "evalbot timed out", summary, "it timed out"))
            await asyncio.shield(job.publisher.complete(evals_id, "timed_out", "evalbot timed out", summary))
        metrics.JOBS.labels(result="timed_out").inc()
        raise
    except RateLimitExceeded as exc:
        return await _rate_limited(job, exc, run_id, evals_id, base_ref)
    except Exception as exc:
        # Whatever broke, the check run must not stay in progress: say why and stop (no silent retry
        # that would spend the model budget again).
        bound.exception("evaluation failed")
        # Exception text can carry URLs, payloads or provider answers: only its class is posted, the
        # rest stays in the worker's log.
        summary = render_template("job_failed.md.j2", error=type(exc).__name__)
        title = "evalbot could not finish the evaluation"
        await _fail(job, base_ref, "failure", title, summary, "the evaluation could not finish")
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


async def _aborted(
    ctx: dict[str, Any], job: PullRequestJob, evals_id: int | None, base_ref: str | None, run_id: int
) -> bool:
    """Whether the job was aborted (a push superseded its head, or its pull request was closed); if so,
    it is cancelled (`_cancel`)."""
    reason = await asyncio.shield(cancel.abort_reason(job.redis, ctx.get("job_id", "")))
    if reason is None:
        return False
    await _cancel(job, reason, evals_id, base_ref, run_id)
    return True


async def _cancel(
    job: PullRequestJob, reason: cancel.Reason, evals_id: int | None, base_ref: str | None, run_id: int
) -> None:
    """Complete the check run `cancelled` with the reason and make the verdict on the SHA block: the run
    did not finish, so nothing on this SHA may pass on it. Shielded: the task may be being cancelled."""
    summary = reason.summary(job.head_sha)
    with contextlib.suppress(Exception):
        if base_ref is not None:
            await asyncio.shield(_fail(job, base_ref, "cancelled", reason.title, summary, reason.title))
        closing = cancel.complete_cancelled(job.redis, job.installation_id, job.publisher, reason, evals_id)
        await asyncio.shield(closing)
        await asyncio.shield(asyncio.to_thread(job.store.end_run, run_id, "cancelled"))
    metrics.JOBS.labels(result="cancelled").inc()
    log.info("evaluation cancelled", repo=job.repo, pr=job.pr_number, sha=job.head_sha[:7], reason=reason.title)


async def _rate_limited(
    job: PullRequestJob, exc: RateLimitExceeded, run_id: int, evals_id: int | None, base_ref: str | None = None
) -> str:
    """Stopped at a rate limit it had no time to wait out: the check run completes as failed with the
    reason, never left in progress; with no quota left even for that, a job completes it after the reset."""
    reason = ratelimit.reason(exc, job.beat.left_s() if job.beat is not None else None)
    title = "evalbot stopped at GitHub's rate limit"
    summary = render_template("rate_limited.md.j2", reason=reason)
    if base_ref is not None:
        await _fail(job, base_ref, "failure", title, summary, reason)
    check_id = evals_id
    try:
        if check_id is None:
            check_id = await job.publisher.ensure_check(EVALS_CHECK, job.details_url)
        await job.publisher.complete(check_id, "failure", title, summary, rerun_button=True)
    except RateLimitExceeded as again:
        check = {"title": title, "summary": summary, "check_id": check_id}
        await complete_later(job.redis, again, job.repo, job.installation_id, job.pr_number, job.head_sha, **check)
    log.warning("stopped at GitHub's rate limit", repo=job.repo, pr=job.pr_number, reason=reason)
    metrics.JOBS.labels(result="rate-limited").inc()
    await asyncio.to_thread(job.store.end_run, run_id, "rate-limited")
    return "rate-limited"


async def complete_later(
    redis: Any, exc: RateLimitExceeded, repo: str, installation_id: int, pr_number: int, head_sha: str, **check: Any
) -> None:
    """Queue `complete_rate_limited` (`check`: its title, summary and check_id) for when GitHub takes
    requests again (a few seconds after)."""
    await redis.enqueue_job(
        complete_rate_limited.__name__,
        # One per stopped run: a later run on the same commit may stop at a later reset.
        _job_id=f"evalbot:rate-limited:{repo}:{pr_number}:{head_sha}:{time.time_ns()}",
        _defer_until=ratelimit.reset_at(exc) + timedelta(seconds=5),
        repo=repo,
        installation_id=installation_id,
        pr_number=pr_number,
        head_sha=head_sha,
        **check,
    )


async def complete_rate_limited(
    ctx: dict[str, Any],
    repo: str,
    installation_id: int,
    pr_number: int,
    head_sha: str,
    title: str,
    summary: str,
    check_id: int | None = None,
) -> str:
    """Complete the stopped run's `evalbot/evals` (`check_id`; None: it could not even be created) as
    failed, with the rate limit as its reason: the run could not (its quota was 0). A run started since
    on the same commit owns the check and is left alone. Still limited: again after the next reset.

    Returns:
        "completed", or "left to a newer run".
    """
    job = PullRequestJob.open(ctx, repo, installation_id, pr_number, head_sha)
    try:
        latest = await job.publisher.check_run(EVALS_CHECK)
        if latest is None:
            check_id = await job.publisher.ensure_check(EVALS_CHECK)
        elif int(latest["id"]) != check_id or latest.get("status") == "completed":
            return "left to a newer run"
        await job.publisher.complete(check_id, "failure", title, summary, rerun_button=True)
    except RateLimitExceeded as exc:
        raise Retry(defer=ratelimit.reset_at(exc) - datetime.now(UTC) + timedelta(seconds=5)) from exc
    return "completed"


complete_rate_limited_job = func(complete_rate_limited, timeout=SHORT_JOB_TIMEOUT_S, max_tries=24)


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
    await state.set_gate_notes(job.redis, job.repo, job.pr_number, job.head_sha, _gate_notes(report))
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


async def handle_command(
    ctx: dict[str, Any],
    repo: str,
    installation_id: int,
    pr_number: int,
    actor: str,
    command: dict[str, Any] | None = None,
    refusal: str | None = None,
    raw: str = "",
    comment_id: int | None = None,
    created_at: str | None = None,
    head_sha: str | None = None,
) -> str:
    """Act on a slash command (or a check-run button) from `actor` on a pull request.

    Args:
        ctx: arq's context.
        repo: "owner/name".
        installation_id: the app installation.
        pr_number: the pull request.
        actor: the login of who commented or clicked.
        command: the parsed Command's fields, when the comment held one evalbot takes.
        refusal: why the comment's command line was refused while parsing.
        raw: the command line as written, for the reply.
        comment_id: the comment to react to (None for a button).
        created_at: when the comment was written (ISO 8601), to tell whether the head moved since.
        head_sha: the commit a button's check run is on: it acts only while that is the head.

    Returns:
        "accepted" or "refused".
    """
    gh = github_client(ctx, installation_id)
    owner, name = repo.split("/", 1)
    pull = await get_pull_request(gh, owner, name, pr_number)
    job = PullRequestJob.open(ctx, repo, installation_id, pr_number, pull["head"]["sha"], gh)
    await job.link_latest_run()
    parsed = Refusal(refusal or "", raw) if command is None else Command(**{**command, "raw": raw})
    try:
        result = await _decide(job, parsed, actor, pull, created_at, head_sha)
    except RequestFailed as exc:
        # The installation lacks a permission the command needs (Members, for `@org/team` approvers):
        # say which and where to grant it, rather than end without a word.
        missing = missing_permissions(exc)
        if missing is None:
            raise
        needed = ", ".join(f"{p.name}={p.level}" for p in missing) or "not named"
        reply = render_template("missing_permission.md.j2", actor=actor, command=raw, permissions=missing)
        return await _refuse(job, actor, raw, f"the installation lacks a permission ({needed})", reply)
    if isinstance(result, Refusal):
        reply = render_template(
            "command_reply.md.j2", actor=actor, command=raw, reason=result.reason, show_help=result.show_help
        )
        return await _refuse(job, actor, raw, result.reason, reply)
    if comment_id is not None:
        await job.publisher.react(comment_id, "eyes")
    return "accepted"


async def _refuse(job: PullRequestJob, actor: str, raw: str, reason: str, reply: str) -> str:
    """Record the refusal and reply with it, unless `actor` is past the refusal rate limit."""
    if not await state.refusal_allowed(job.redis, job.repo, actor):
        log.warning("refusal over the rate limit: not answered", repo=job.repo, pr=job.pr_number, actor=actor)
        return "refused"
    await job.audit("refused", actor, command=raw, reason=reason)
    await job.publisher.reply(reply)
    return "refused"


async def _decide(
    job: PullRequestJob,
    command: Command | Refusal,
    actor: str,
    pull: dict[str, Any],
    created_at: str | None,
    seen_sha: str | None,
) -> Command | Refusal:
    """Carry out `command` if `actor` may; the Refusal to reply with otherwise.

    A command acts on what its author saw: a button on its check run's commit, a comment on the head
    as it was when the comment was written.
    """
    if isinstance(command, Refusal):
        return command
    if command.name == "help":
        if await state.help_allowed(job.redis, job.repo, job.pr_number, actor):
            await job.publisher.reply(render_template("help.md.j2"))
        else:
            # Anyone who can comment could otherwise make the bot write without end.
            log.info("/help already answered this hour: not again", repo=job.repo, pr=job.pr_number, actor=actor)
        return command
    head = job.head_sha[:7]
    if seen_sha is not None and seen_sha != job.head_sha:
        return Refusal(
            f"the button is on `{seen_sha[:7]}`, which is no longer the head of this pull request (`{head}`): "
            "nothing was run",
            show_help=False,
        )
    verb = "/eval" if command.name == "eval" else "/approve"
    unseen = await _unseen_head(job, pull, created_at)
    if unseen is not None:
        action = "evaluate" if command.name == "eval" else "approve"
        return Refusal(f"{unseen}: comment `{verb}` again to {action} the current head", show_help=False)
    base_ref = pull["base"]["ref"]
    if command.name == "eval":
        return await _rerun(job, command, actor, pull)
    try:
        policy = await _base_policy(job, base_ref)
    except BasePolicyError as exc:
        return Refusal(f"no approval is accepted while the base branch's policy cannot be read: {exc}", show_help=False)
    if not await is_approver(job.gh, policy.approvers, actor):
        return Refusal("only approvers listed in the base branch's `.evalbot.yml` may approve", show_help=False)
    if command.name == "approve_cancel":
        approval = await state.get_approval(job.store, job.repo, job.pr_number, job.head_sha, base_ref)
        if approval is None:
            return Refusal(f"`{head}` has no approval to cancel", show_help=False)
        # The cancel event is what withdraws the approval.
        await job.audit("cancel", actor, reason=command.reason)
        await publish_sha(job, pull)
        return command
    if command.sha and not job.head_sha.startswith(command.sha):
        return Refusal(
            f"`{command.sha}` is not the head of this pull request (`{head}`): only the head can be approved",
            show_help=False,
        )
    return await _approve(job, command, actor, pull, policy)


async def _unseen_head(job: PullRequestJob, pull: dict[str, Any], created_at: str | None) -> str | None:
    """Why the comment may not have seen the head (or the base it is compared with), or None: a command
    vouches only for what its author saw."""
    if not created_at:
        return None
    head_sha = job.head_sha[:7]
    key = HEAD_KEY.format(repo=job.repo, pr=job.pr_number)
    raw = await job.redis.get(key)
    if raw is None:
        # No record of when this head arrived (its delivery never came, or the record expired): the
        # command may predate it. Refused, and the head noted now, so a command written after this counts.
        now = {"sha": job.head_sha, "base": pull["base"]["ref"], "at": time.time()}
        await job.redis.set(key, json.dumps(now), ex=HEAD_TTL_S, nx=True)
        return f"evalbot has no record of when `{head_sha}` arrived, so it cannot tell whether this comment saw it"
    head = json.loads(raw)
    if (head["sha"], head.get("base")) == (job.head_sha, pull["base"]["ref"]):
        written = datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
        # GitHub stamps comments to the second: a head that arrived within that second counts as seen.
        if head["at"] < written + 1.0:
            return None
    # Arrived after the comment, or its delivery has not arrived yet: when it was pushed is unknown.
    return f"the pull request got new commits after this comment; `{head_sha}` was not seen by it"


async def _approve(
    job: PullRequestJob, command: Command, actor: str, pull: dict[str, Any], policy: Config
) -> Command | Refusal:
    base_ref = pull["base"]["ref"]
    # This pull request's result against its base (its own, or the evaluation of the same head and base
    # it shares), not the SHA's check: another pull request may share the head with another base.
    verdict = await verdict_for(job.redis, job.repo, job.head_sha, job.pr_number, base_ref)
    if actor.casefold() == pull["user"]["login"].casefold():
        if verdict is not None and verdict.policy_changes:
            # Whatever `allow_self_approval` says: it is itself policy, and the change may be to it.
            return Refusal("the author of a pull request cannot approve a change to the policy", show_help=False)
        if not policy.allow_self_approval:
            return Refusal(
                "the author of a pull request cannot approve it (`allow_self_approval` is off)", show_help=False
            )
    if verdict is None or verdict.base_ref != base_ref or verdict.approval in ("untrusted", "blocked"):
        reason = f": {verdict.reason}" if verdict is not None and verdict.reason else ""
        return Refusal(
            f"`evalbot/evals` has not finished on `{job.head_sha[:7]}` against `{base_ref}`: nothing to approve yet"
            + reason,
            show_help=False,
        )
    why = await _reason_needed(job, verdict)
    override = why is not None
    if override and not command.reason:
        return Refusal(
            f"{why}: an approval needs a reason (`/approve <reason>`) and is recorded as an override",
            show_help=False,
        )
    # The audit event is the approval, bound to the head SHA and the base branch the lead saw: written
    # before evalbot/approval shows it, so nothing is shown that the durable trail does not hold.
    await job.audit("override" if override else "approval", actor, reason=command.reason, base_ref=base_ref)
    await publish_sha(job, pull)
    return command


async def _reason_needed(job: PullRequestJob, verdict: PullVerdict) -> str | None:
    """Why approving the head must carry a reason and count as an override; None when it need not."""
    if verdict.evals != "success":
        return "`evalbot/evals` failed on this commit"
    notes = await state.get_gate_notes(job.redis, job.repo, job.pr_number, job.head_sha)
    if notes.get("inconclusive"):
        # Past a threshold but not significant: too few cases to tell, so a lead owns the call, on record.
        return "`evalbot/evals` shows an inconclusive threshold breach on this commit"
    return None


async def _rerun(job: PullRequestJob, command: Command, actor: str, pull: dict[str, Any]) -> Command | Refusal:
    base_ref = pull["base"]["ref"]
    if not await has_write_access(job.gh, job.owner, job.name, actor):
        return Refusal("`/eval` needs write access to the repository", show_help=False)
    if command.budget_usd is not None or command.models:
        try:
            policy = await _base_policy(job, base_ref)
        except BasePolicyError as exc:
            return Refusal(
                f"`--budget` and `--models` need the base branch's policy, which cannot be read: {exc}",
                show_help=False,
            )
        if command.budget_usd is not None and not await is_approver(job.gh, policy.approvers, actor):
            return Refusal("only approvers may lift the budget with `--budget`", show_help=False)
        for model in command.models:
            reason = model_refusal(model, policy.allowed_models)
            if reason is not None:
                return Refusal(f"`--models`: model {model!r} is not allowed: {reason}", show_help=False)
    if command.suites:
        head_config = await read_config(GitHubSource(job.gh, job.owner, job.name), job.head_sha)
        known = [s.name for s in head_config.suites] if head_config else []
        unknown = [s for s in command.suites if s not in known]
        if unknown:
            return Refusal(
                f"unknown suite {', '.join(unknown)} (suites: {', '.join(known) or 'none'})", show_help=False
            )
    plain = not (command.suites or command.models or command.budget_usd is not None)
    under_way = await cancel.evaluation_under_way(job.redis, job.repo, job.pr_number, job.head_sha) if plain else None
    if under_way is not None and await _runs_trusted(job, under_way, pull):
        # The same head is being evaluated: this request joins that run rather than paying for it again.
        await job.audit("eval_requested", actor, reason=f"{command.raw} (joined the run under way)")
        return command
    await job.audit("eval_requested", actor, reason=command.raw)
    job_id = f"{eval_job_id(job.repo, job.pr_number, job.head_sha)}:by:{actor}:{time.time_ns()}"
    await cancel.enqueue_evaluation(
        job.redis,
        job_id,
        job.repo,
        job.installation_id,
        job.pr_number,
        job.head_sha,
        trusted=True,
        only=list(command.suites) or None,
        budget_usd=command.budget_usd,
        models=list(command.models),
    )
    return command


async def _runs_trusted(job: PullRequestJob, job_id: str, pull: dict[str, Any]) -> bool:
    """Whether evaluation `job_id` will evaluate rather than wait for a writer: one a `/eval` asked
    for, or one of a pull request whose author may write and whose head is not in a fork."""
    if ":by:" in job_id:
        return True
    return not is_fork(pull) and await has_write_access(job.gh, job.owner, job.name, pull["user"]["login"])


async def publish_head(ctx: dict[str, Any], repo: str, installation_id: int, head_sha: str) -> str:
    """Publish `head_sha`'s checks again from the open pull requests with that head (one was closed).

    Returns:
        "published", or "no open pull request" when none has that head any more.
    """
    gh = github_client(ctx, installation_id)
    owner, name = repo.split("/", 1)
    pulls = await open_pulls_with_head(gh, owner, name, head_sha)
    if not pulls:
        return "no open pull request"
    job = PullRequestJob.open(ctx, repo, installation_id, int(pulls[0]["number"]), head_sha, gh)
    await job.link_latest_run()
    evals_id = await job.publisher.ensure_check(EVALS_CHECK, job.details_url)
    await publish_sha(job, pulls[0], evals_id)
    return "published"


async def rerun_head(ctx: dict[str, Any], repo: str, installation_id: int, head_sha: str, actor: str) -> str:
    """A check suite's "Re-run" on a commit whose payload names no pull request (GitHub leaves
    `pull_requests` empty for a fork's head): `actor`'s `/eval` on the open pull request with that head.

    Returns:
        What `handle_command` returned, or "no open pull request".
    """
    gh = github_client(ctx, installation_id)
    owner, name = repo.split("/", 1)
    pulls = await open_pulls_with_head(gh, owner, name, head_sha)
    if not pulls:
        return "no open pull request"
    command = {"name": "eval"}
    return await handle_command(
        ctx, repo, installation_id, int(pulls[0]["number"]), actor, command, raw=RERUN_RAW, head_sha=head_sha
    )
