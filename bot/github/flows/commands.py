"""A slash command (`/eval`, `/approve`, `/approve cancel`, `/help`) or a check run's button, end to end:
the web process parses the comment (bot/github/flows/command_line.py) and queues `handle_command`,
which checks who may do what on the head the author saw, then runs, approves or replies with the refusal.
`decide` is the approval rule itself, with no I/O."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, Literal

import structlog
from githubkit.exception import RequestFailed

from bot.errors import BasePolicyError
from bot.github.api.permissions import has_write_access, is_approver, missing_permissions
from bot.github.api.source import GitHubSource, get_pull_request, is_fork, open_pulls_with_head
from bot.github.constants import HEAD_KEY, HEAD_TTL_S, eval_job_id
from bot.github.context import PullRequestJob, github_client
from bot.github.flows.command_line import RERUN_RAW, Command, Refusal
from bot.github.flows.gate import publish_sha, read_base
from bot.github.state import aborts, approvals
from bot.github.state.verdicts import PullVerdict, verdict_for
from bot.pipeline.config import Config, model_refusal
from bot.pipeline.files import read_config
from bot.pipeline.render import render_template

log = structlog.get_logger(__name__)


async def _base_policy(job: PullRequestJob, base_ref: str) -> Config:
    """`.evalbot.yml` of the base branch as it is now: who approves is never read from the pull request.

    Raises:
        BasePolicyError: the base's file cannot be read or parsed.
    """
    return (await read_base(job.gh, job.owner, job.name, base_ref))[1]


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
        result = await _carry_out(job, parsed, actor, pull, created_at, head_sha)
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
    if not await approvals.refusal_allowed(job.redis, job.repo, actor):
        log.warning("refusal over the rate limit: not answered", repo=job.repo, pr=job.pr_number, actor=actor)
        return "refused"
    await job.audit("refused", actor, command=raw, reason=reason)
    await job.publisher.reply(reply)
    return "refused"


async def _carry_out(
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
        if await approvals.help_allowed(job.redis, job.repo, job.pr_number, actor):
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
        approval = await approvals.get_approval(job.store, job.repo, job.pr_number, job.head_sha, base_ref)
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
    notes = await approvals.get_gate_notes(job.redis, job.repo, job.pr_number, job.head_sha)
    kind = decide(command, actor, pull["user"]["login"], job.head_sha, base_ref, verdict, notes, policy)
    if isinstance(kind, Refusal):
        return kind
    # The audit event is the approval, bound to the head SHA and the base branch the lead saw: written
    # before evalbot/approval shows it, so nothing is shown that the durable trail does not hold.
    await job.audit(kind, actor, reason=command.reason, base_ref=base_ref)
    await publish_sha(job, pull)
    return command


def decide(
    command: Command,
    actor: str,
    author: str,
    head_sha: str,
    base_ref: str,
    verdict: PullVerdict | None,
    notes: dict[str, Any],
    policy: Config,
) -> Literal["approval", "override"] | Refusal:
    """What an approver's `/approve` of `head_sha` against `base_ref` is: an approval, an override (the
    evaluation failed or breached a threshold inconclusively: a reason is required), or refused. Pure:
    `verdict` is the evaluation that counts for the pull request, `notes` its gate notes."""
    if actor.casefold() == author.casefold():
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
            f"`evalbot/evals` has not finished on `{head_sha[:7]}` against `{base_ref}`: nothing to approve yet"
            + reason,
            show_help=False,
        )
    why = _reason_needed(verdict, notes)
    if why is None:
        return "approval"
    if not command.reason:
        return Refusal(
            f"{why}: an approval needs a reason (`/approve <reason>`) and is recorded as an override",
            show_help=False,
        )
    return "override"


def _reason_needed(verdict: PullVerdict, notes: dict[str, Any]) -> str | None:
    """Why approving the head must carry a reason and count as an override; None when it need not."""
    if verdict.evals != "success":
        return "`evalbot/evals` failed on this commit"
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
    under_way = await aborts.evaluation_under_way(job.redis, job.repo, job.pr_number, job.head_sha) if plain else None
    if under_way is not None and await _runs_trusted(job, under_way, pull):
        # The same head is being evaluated: this request joins that run rather than paying for it again.
        await job.audit("eval_requested", actor, reason=f"{command.raw} (joined the run under way)")
        return command
    await job.audit("eval_requested", actor, reason=command.raw)
    job_id = f"{eval_job_id(job.repo, job.pr_number, job.head_sha)}:by:{actor}:{time.time_ns()}"
    await aborts.enqueue_evaluation(
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
