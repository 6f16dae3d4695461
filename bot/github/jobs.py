"""arq jobs: evaluate a pull request's head SHA and publish; act on slash commands and check buttons."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, ClassVar

import structlog
from arq import Retry
from arq.connections import RedisSettings
from githubkit.exception import GitHubException

from bot.engine.cache import RedisCache
from bot.errors import InputError
from bot.github import metrics, state
from bot.github.client import installation_client
from bot.github.commands import Command, Refusal
from bot.github.constants import (
    APPROVAL_CHECK,
    EVALS_CHECK,
    HEAD_KEY,
    JOB_MAX_TRIES,
    JOB_TIMEOUT_S,
    PROGRESS_INTERVAL_S,
    RETRY_DEFER_S,
    eval_job_id,
)
from bot.github.permissions import has_write_access, is_approver
from bot.github.publish import (
    Publisher,
    comment_body,
    evals_conclusion,
    report_annotations,
    report_markdown,
    report_title,
)
from bot.github.redact import Redactor
from bot.github.source import GitHubSource, get_pull_request, is_fork
from bot.pipeline.compare import SuiteReport
from bot.pipeline.config import Config, model_refusal
from bot.pipeline.files import read_config
from bot.pipeline.render import render_template
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.settings import Settings, get_settings

log = structlog.get_logger(__name__)

ClientFactory = Callable[[Settings, int], Any]


@dataclass
class _PullRequestJob:
    """What every job on one pull request's head SHA needs: clients, names and where to post."""

    settings: Settings
    redis: Any
    gh: Any
    repo: str
    owner: str
    name: str
    installation_id: int
    pr_number: int
    head_sha: str
    publisher: Publisher
    details_url: str | None

    @staticmethod
    def client(ctx: dict[str, Any], installation_id: int) -> Any:
        factory: ClientFactory = ctx.get("github_factory", installation_client)
        return factory(ctx["settings"], installation_id)

    @classmethod
    def open(
        cls, ctx: dict[str, Any], repo: str, installation_id: int, pr_number: int, head_sha: str, gh: Any = None
    ) -> _PullRequestJob:
        settings: Settings = ctx["settings"]
        owner, name = repo.split("/", 1)
        gh = gh or cls.client(ctx, installation_id)
        details_url = f"{settings.PUBLIC_URL.rstrip('/')}/" if settings.PUBLIC_URL else None
        publisher = Publisher(gh, owner, name, pr_number, head_sha, settings.APP_ID, Redactor.for_settings(settings))
        return cls(
            settings, ctx["redis"], gh, repo, owner, name, installation_id, pr_number, head_sha, publisher, details_url
        )

    async def base_policy(self, base_sha: str) -> Config:
        """`.evalbot.yml` of the base: who approves is never read from the pull request itself."""
        try:
            return await read_config(GitHubSource(self.gh, self.owner, self.name, self.pr_number), base_sha) or Config()
        except InputError:
            return Config()

    async def audit(self, kind: str, actor: str, **details: Any) -> None:
        await state.audit(self.redis, self.repo, kind, self.pr_number, self.head_sha, actor, **details)

    async def audit_trail(self) -> list[dict[str, Any]]:
        return await state.audit_entries(self.redis, self.repo, self.pr_number, last=20)

    async def approval_summary(self, state_name: str, approvers: list[str], **data: Any) -> str:
        return render_template(
            "approval.md.j2",
            state=state_name,
            head_sha=self.head_sha,
            approvers=approvers,
            audit=await self.audit_trail(),
            **data,
        )


async def evaluate_pull_request(
    ctx: dict[str, Any],
    repo: str,
    installation_id: int,
    pr_number: int,
    base_sha: str,
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
        base_sha: the base branch's SHA (policy and "before" prompts).
        head_sha: the head SHA (what is evaluated, and where the checks go).
        trusted: a writer asked for this run (`/eval`): skip the fork and author checks.
        only: suites to evaluate whether or not they changed (`/eval suite ...`).
        budget_usd: lifts `budget.max_cost_usd` for this run (`/eval --budget`, approvers only).
        models: models to run the head prompt on side by side (`/eval --models`).

    Returns:
        The gate verdict: "pass", "fail", "error"; "untrusted" when waiting for a `/eval`; "crashed"
        when the run could not finish.
    """
    job = _PullRequestJob.open(ctx, repo, installation_id, pr_number, head_sha)
    bound = log.bind(repo=repo, pr=pr_number, sha=head_sha[:7], job_try=ctx.get("job_try", 1))
    started = time.perf_counter()
    try:
        evals_id = await job.publisher.ensure_check(EVALS_CHECK, job.details_url)
        if not trusted:
            pull_request = await get_pull_request(job.gh, job.owner, job.name, pr_number)
            fork = is_fork(pull_request)
            author = pull_request["user"]["login"]
            if fork or not await has_write_access(job.gh, job.owner, job.name, author):
                await _wait_for_eval(job, evals_id, fork, base_sha)
                return "untrusted"
    except GitHubException as exc:
        # GitHub still failing after githubkit's own retries, before anything is posted: ask arq to try
        # the whole job again later rather than lose the pull request's check — unless GitHub refused
        # (4xx: permissions, a deleted repository) or the tries are spent, where a retry cannot help.
        status = getattr(getattr(exc, "response", None), "status_code", 500)
        if status < 500 or ctx.get("job_try", 1) >= JOB_MAX_TRIES:
            bound.error("cannot reach GitHub; giving up", error=str(exc))
            return "github-error"
        bound.warning("cannot reach GitHub; retrying the job", error=str(exc))
        raise Retry(defer=RETRY_DEFER_S * ctx.get("job_try", 1)) from exc
    try:
        report = await _evaluate(job, evals_id, base_sha, only, budget_usd, models or [])
        await _publish(job, evals_id, report)
    except asyncio.CancelledError:
        # arq's job timeout cancels the job: close the check run on the way out (shielded, as the
        # task itself is being cancelled), then let the cancellation go on.
        summary = render_template("job_failed.md.j2", reason=f"the evaluation took longer than {JOB_TIMEOUT_S} s")
        with contextlib.suppress(Exception):
            await asyncio.shield(job.publisher.complete(evals_id, "timed_out", "evalbot timed out", summary))
        metrics.JOBS.labels(result="timed_out").inc()
        raise
    except Exception as exc:
        # Whatever broke, the check run must not stay in progress: say why and stop (no silent retry
        # that would spend the model budget again).
        bound.exception("evaluation failed")
        # Exception text can carry URLs, payloads or provider answers: only its class is posted, the
        # rest stays in the worker's log.
        summary = render_template("job_failed.md.j2", error=type(exc).__name__)
        await job.publisher.complete(
            evals_id, "failure", "evalbot could not finish the evaluation", summary, rerun_button=True
        )
        metrics.JOBS.labels(result="crashed").inc()
        return "crashed"
    finally:
        metrics.JOB_SECONDS.observe(time.perf_counter() - started)

    metrics.JOBS.labels(result=report.verdict).inc()
    if report.spend is not None:
        metrics.MODEL_CALLS.inc(report.spend.calls)
        metrics.SPEND_USD.inc(report.spend.under_test_usd + report.spend.judge_usd)
    bound.info("evaluation published", verdict=report.verdict)
    return report.verdict


async def _wait_for_eval(job: _PullRequestJob, evals_id: int, fork: bool, base_sha: str) -> None:
    summary = render_template("untrusted.md.j2", fork=fork, head_sha=job.head_sha)
    await job.publisher.complete(evals_id, "action_required", "Waiting for a maintainer's /eval", summary)
    policy = await job.base_policy(base_sha)
    approval_id = await job.publisher.ensure_check(APPROVAL_CHECK, job.details_url)
    await job.audit("awaiting_eval", "evalbot", reason="fork" if fork else "author without write access")
    approval = await job.approval_summary("untrusted", policy.approvers)
    await job.publisher.complete(approval_id, "action_required", "Waiting for a maintainer's /eval", approval)


async def _evaluate(
    job: _PullRequestJob,
    evals_id: int,
    base_sha: str,
    only: list[str] | None,
    budget_usd: float | None,
    models: list[str],
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
        title = f"{done} / {total} calls, {cached} from cache"
        task = asyncio.create_task(job.publisher.progress(evals_id, title, summary))
        updates.add(task)
        task.add_done_callback(updates.discard)

    summary = render_template("progress.md.j2", done=0, total="?", cached=0)
    await job.publisher.progress(evals_id, "Evaluating", summary)
    options = RunOptions(
        only=only or None,
        api_base=job.settings.EVALBOT_API_BASE,
        concurrency=job.settings.EVALBOT_CONCURRENCY,
        cache=RedisCache(job.redis),
        on_progress=on_progress,
        budget_usd=budget_usd,
        models=models,
    )
    source = GitHubSource(job.gh, job.owner, job.name, job.pr_number)
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


async def _publish(job: _PullRequestJob, evals_id: int, report: Report) -> None:
    publisher = job.publisher
    await job.audit("verdict", "evalbot", verdict=report.verdict, metrics=_metrics_summary(report))
    if not report.suites and not report.errors and not report.problems and not report.policy_error:
        summary = render_template("no_changes.md.j2")
        await publisher.complete(evals_id, "success", "No prompt, config or dataset changed", summary)
        approval = await job.approval_summary("not_needed", report.approvers)
        approval_id = await publisher.ensure_check(APPROVAL_CHECK, job.details_url)
        await publisher.complete(approval_id, "success", "No AI artefact changed", approval)
        return
    markdown = report_markdown(report, await publisher.blob_url())
    await state.set_gate_notes(job.redis, job.repo, job.pr_number, job.head_sha, _gate_notes(report))
    notes = report_annotations(report)
    await publisher.complete(
        evals_id, evals_conclusion(report), report_title(report), markdown, rerun_button=True, notes=notes
    )
    tradeoffs = [s for s in report.suites if s.models is not None]
    suites = [s.name for s in report.suites]
    await _publish_approval(job, report.approvers, suites, report.verdict != "pass", tradeoffs)
    await publisher.upsert_comment(comment_body(markdown, job.head_sha, job.details_url))


def _gate_notes(report: Report) -> dict[str, Any]:
    return {
        "inconclusive": [asdict(breach) for breach in report.inconclusive],
        "definition_changes": [asdict(change) for change in report.definition_changes],
    }


async def _publish_approval(
    job: _PullRequestJob,
    approvers: list[str],
    suites: list[str],
    evals_failed: bool,
    tradeoffs: list[SuiteReport] | None = None,
) -> None:
    """`evalbot/approval` for the head SHA: approved if a lead approved it, else waiting for one."""
    approval_id = await job.publisher.ensure_check(APPROVAL_CHECK, job.details_url)
    approval = await state.get_approval(job.redis, job.repo, job.pr_number, job.head_sha)
    notes = await state.get_gate_notes(job.redis, job.repo, job.pr_number, job.head_sha)
    if approval is not None:
        summary = await job.approval_summary("approved", approvers, approval=approval, notes=notes)
        title = f"Approved by {approval.approver}" + (" (override)" if approval.override else "")
        await job.publisher.complete(approval_id, "success", title, summary)
        return
    summary = await job.approval_summary(
        "waiting", approvers, suites=suites, evals_failed=evals_failed, tradeoffs=tradeoffs, notes=notes
    )
    await job.publisher.complete(approval_id, "action_required", "Waiting for a lead's /approve", summary)


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

    Returns:
        "accepted" or "refused".
    """
    gh = _PullRequestJob.client(ctx, installation_id)
    owner, name = repo.split("/", 1)
    pull_request = await get_pull_request(gh, owner, name, pr_number)
    head_sha, base_sha = pull_request["head"]["sha"], pull_request["base"]["sha"]
    job = _PullRequestJob.open(ctx, repo, installation_id, pr_number, head_sha, gh)
    parsed = Refusal(refusal or "", raw) if command is None else Command(**{**command, "raw": raw})
    result = await _decide(job, parsed, actor, pull_request, base_sha, created_at)
    if isinstance(result, Refusal):
        if not await state.refusal_allowed(job.redis, repo, actor):
            log.warning("refusal over the rate limit: not answered", repo=repo, pr=pr_number, actor=actor)
            return "refused"
        await job.audit("refused", actor, command=raw, reason=result.reason)
        reply = render_template(
            "command_reply.md.j2", actor=actor, command=raw, reason=result.reason, show_help=result.show_help
        )
        await job.publisher.reply(reply)
        return "refused"
    if comment_id is not None:
        await job.publisher.react(comment_id, "eyes")
    return "accepted"


async def _decide(
    job: _PullRequestJob,
    command: Command | Refusal,
    actor: str,
    pr: dict[str, Any],
    base_sha: str,
    created_at: str | None = None,
) -> Command | Refusal:
    """Carry out `command` if `actor` may; the Refusal to reply with otherwise."""
    if isinstance(command, Refusal):
        return command
    policy = await job.base_policy(base_sha)
    if command.name == "help":
        await job.publisher.reply(render_template("help.md.j2"))
        return command
    if command.name == "eval":
        if await _head_moved_since(job, created_at):
            return Refusal(
                f"the pull request got new commits after this comment; `{job.head_sha[:7]}` was not seen by it: "
                "comment `/eval` again to evaluate the current head",
                show_help=False,
            )
        return await _rerun(job, command, actor, base_sha, policy)
    if not await is_approver(job.gh, policy.approvers, actor):
        return Refusal("only approvers listed in the base branch's `.evalbot.yml` may approve", show_help=False)
    if command.name == "approve_cancel":
        approval = await state.get_approval(job.redis, job.repo, job.pr_number, job.head_sha)
        if approval is None:
            return Refusal(f"`{job.head_sha[:7]}` has no approval to cancel", show_help=False)
        await state.clear_approval(job.redis, job.repo, job.pr_number)
        await job.audit("cancel", actor, reason=command.reason)
        evals = await job.publisher.check_run(EVALS_CHECK)
        evals_failed = bool(evals and evals.get("conclusion") != "success")
        await _publish_approval(job, policy.approvers, [], evals_failed)
        return command
    return await _approve(job, command, actor, pr, policy)


async def _head_moved_since(job: _PullRequestJob, created_at: str | None) -> bool:
    """Whether the current head arrived after the comment: a writer's `/eval` vouches for what they saw."""
    if not created_at:
        return False
    raw = await job.redis.get(HEAD_KEY.format(repo=job.repo, pr=job.pr_number))
    if raw is None:
        return False
    head = json.loads(raw)
    written = datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
    # GitHub stamps comments to the second: a head that arrived within that second counts as seen.
    return bool(head["sha"] == job.head_sha and head["at"] >= written + 1.0)


async def _approve(
    job: _PullRequestJob, command: Command, actor: str, pr: dict[str, Any], policy: Config
) -> Command | Refusal:
    if actor.casefold() == pr["user"]["login"].casefold() and not policy.allow_self_approval:
        return Refusal("the author of a pull request cannot approve it (`allow_self_approval` is off)", show_help=False)
    evals = await job.publisher.check_run(EVALS_CHECK)
    if evals is None or evals.get("status") != "completed" or evals.get("conclusion") == "action_required":
        return Refusal(
            f"`evalbot/evals` has not finished on `{job.head_sha[:7]}`: nothing to approve yet", show_help=False
        )
    why = await _reason_needed(job, evals)
    override = why is not None
    if override and not command.reason:
        return Refusal(
            f"{why}: an approval needs a reason (`/approve <reason>`) and is recorded as an override",
            show_help=False,
        )
    approval = state.Approval(job.head_sha, actor, command.reason, override, time.time())
    await state.set_approval(job.redis, job.repo, job.pr_number, approval)
    await job.audit("override" if override else "approval", actor, reason=command.reason)
    await _publish_approval(job, policy.approvers, [], override)
    return command


async def _reason_needed(job: _PullRequestJob, evals: dict[str, Any]) -> str | None:
    """Why approving the head must carry a reason and count as an override; None when it need not."""
    if evals.get("conclusion") != "success":
        return "`evalbot/evals` failed on this commit"
    notes = await state.get_gate_notes(job.redis, job.repo, job.pr_number, job.head_sha)
    if notes.get("inconclusive"):
        # Past a threshold but not significant: too few cases to tell, so a lead owns the call, on record.
        return "`evalbot/evals` shows an inconclusive threshold breach on this commit"
    return None


async def _rerun(
    job: _PullRequestJob, command: Command, actor: str, base_sha: str, policy: Config
) -> Command | Refusal:
    if not await has_write_access(job.gh, job.owner, job.name, actor):
        return Refusal("`/eval` needs write access to the repository", show_help=False)
    if command.budget_usd is not None and not await is_approver(job.gh, policy.approvers, actor):
        return Refusal("only approvers may lift the budget with `--budget`", show_help=False)
    for model in command.models:
        reason = model_refusal(model, policy.allowed_models)
        if reason is not None:
            return Refusal(f"`--models`: model {model!r} is not allowed: {reason}", show_help=False)
    if command.suites:
        head_config = await read_config(GitHubSource(job.gh, job.owner, job.name, job.pr_number), job.head_sha)
        known = [s.name for s in head_config.suites] if head_config else []
        unknown = [s for s in command.suites if s not in known]
        if unknown:
            return Refusal(
                f"unknown suite {', '.join(unknown)} (suites: {', '.join(known) or 'none'})", show_help=False
            )
    await job.audit("eval_requested", actor, reason=command.raw)
    job_id = f"{eval_job_id(job.repo, job.pr_number, job.head_sha)}:by:{actor}:{time.time_ns()}"
    await job.redis.enqueue_job(
        "evaluate_pull_request",
        _job_id=job_id,
        repo=job.repo,
        installation_id=job.installation_id,
        pr_number=job.pr_number,
        base_sha=base_sha,
        head_sha=job.head_sha,
        trusted=True,
        only=list(command.suites) or None,
        budget_usd=command.budget_usd,
        models=list(command.models),
    )
    return command


async def _startup(ctx: dict[str, Any]) -> None:
    ctx.setdefault("settings", get_settings())


class WorkerSettings:
    """`arq bot.github.jobs.WorkerSettings`, or `evalbot worker`."""

    functions: ClassVar[list[Any]] = [evaluate_pull_request, handle_command]
    on_startup = _startup
    job_timeout = JOB_TIMEOUT_S
    max_tries = JOB_MAX_TRIES
    redis_settings = RedisSettings.from_dsn(get_settings().REDIS_URL)
