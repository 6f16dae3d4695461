"""One verdict per commit: a head SHA's checks are the strictest over every open pull request with that head.

Check runs live on a commit, and branch protection does not ask which pull request set them. So each
job stores its pull request's verdict on the SHA, and the SHA's two checks are published from all of
them: `success` only when every open pull request with that head passes (evaluated where its diff
touches AI files, approved by an approver of its base branch's current policy where needed).
`decide` is the approval check's rule for one pull request, with no I/O; `publish_head`, a job,
publishes a SHA's checks again when one of its pull requests closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from githubkit import GitHub
from githubkit.exception import RequestFailed

from bot.errors import BasePolicyError, InputError
from bot.github.api.permissions import is_approver, missing_permissions
from bot.github.api.publish import Conclusion
from bot.github.api.source import GitHubSource, branch_tip, get_pull_request, open_pulls_with_head
from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK, VERDICT_LOCK_KEY, VERDICT_LOCK_TIMEOUT_S, eval_job_id
from bot.github.context import PullRequestJob, github_client
from bot.github.state import aborts, approvals
from bot.github.state.verdicts import PullVerdict, approval_for, for_base, store_verdict, verdicts_on
from bot.pipeline.config import CONFIG_PATH, Config
from bot.pipeline.files import read_config
from bot.pipeline.render import render_template
from bot.store import Approval


async def block(
    job: PullRequestJob, base_ref: str, conclusion: Conclusion, title: str, summary: str, reason: str
) -> None:
    """Keep this pull request's verdict on the SHA when it cannot pass: another pull request with the
    same head must not publish a pass over it."""
    verdict = PullVerdict(job.pr_number, base_ref, conclusion, title, summary, "blocked", reason=reason)
    await store_verdict(job.redis, job.repo, job.head_sha, verdict)


async def read_base(gh: GitHub[Any], owner: str, name: str, base_ref: str) -> tuple[str, Config]:
    """The tip of branch `base_ref` now, and its `.evalbot.yml`: who approves, thresholds, budget, judge, gates.

    `pull_request.base.sha` is the base's tip at the pull request's last push; a lead removed from the
    base since then must not approve, so the branch is resolved here, when the job or command runs.
    No file on the base is a policy with no approvers; a file that cannot be read is no policy at all.

    Raises:
        BasePolicyError: the branch or its `.evalbot.yml` cannot be read or parsed.
    """
    try:
        sha = await branch_tip(gh, owner, name, base_ref)
    except RequestFailed as exc:
        raise BasePolicyError(
            f"the base branch {base_ref!r} cannot be read (GitHub answered {exc.response.status_code})", CONFIG_PATH
        ) from exc
    try:
        config = await read_config(GitHubSource(gh, owner, name), sha)
    except RequestFailed as exc:
        raise BasePolicyError(
            f"the base branch's file cannot be read (GitHub answered {exc.response.status_code})", CONFIG_PATH
        ) from exc
    except InputError as exc:
        raise BasePolicyError(
            f"the base branch's file cannot be parsed ({base_ref} at {sha[:7]}): {exc.message}",
            exc.path or CONFIG_PATH,
            exc.line,
        ) from exc
    return sha, config or Config()


@dataclass
class _Row:
    """One open pull request's part in the SHA's checks."""

    pr: int
    base_ref: str
    verdict: PullVerdict | None
    evals: Conclusion | None  # None: not evaluated yet (its job is queued)
    evals_title: str
    approved: bool
    approval_title: str
    approval_summary: str = ""


_EVALS_RANK = {"failure": 0, "timed_out": 0, "cancelled": 0, "action_required": 1, None: 2}


async def publish_sha(job: PullRequestJob, own: dict[str, Any], evals_id: int | None = None) -> None:
    """Publish the SHA's checks from the verdicts of every open pull request with this head.

    Args:
        job: the job on pull request `own` at `job.head_sha`.
        own: the job's pull request as the REST API gave it (counted even when GitHub's list lags).
        evals_id: the evals check run to complete; None leaves `evalbot/evals` as it is (commands).
    """
    # Two jobs on one SHA must not publish crossed views of the verdicts.
    lock = job.redis.lock(VERDICT_LOCK_KEY.format(repo=job.repo, sha=job.head_sha), timeout=VERDICT_LOCK_TIMEOUT_S)
    async with lock:
        pulls = await open_pulls_with_head(job.gh, job.owner, job.name, job.head_sha)
        if all(int(p["number"]) != job.pr_number for p in pulls):
            pulls.append(own)
        # Pull requests a delivery named with this head that GitHub's list does not show yet.
        listed = {int(p["number"]) for p in pulls}
        for number in sorted(await approvals.noted_pulls(job.redis, job.repo, job.head_sha) - listed):
            pull = await get_pull_request(job.gh, job.owner, job.name, number)
            if pull.get("state") == "open" and pull["head"]["sha"] == job.head_sha:
                pulls.append(pull)
        verdicts = await verdicts_on(job.redis, job.repo, job.head_sha)
        policies: dict[str, Config | BasePolicyError] = {}
        rows = []
        for pull in pulls:
            number, base_ref = int(pull["number"]), str(pull["base"]["ref"])
            # The pull requests with this head and base share one evaluation, and so its approval.
            sharing = [number, *(int(p["number"]) for p in pulls if p["base"]["ref"] == base_ref)]
            rows.append(await _row(job, pull, for_base(verdicts, number, base_ref), policies, sharing))
        # This job's own pull request first among equals: its report is what its author looks for.
        rows.sort(key=lambda r: r.pr != job.pr_number)
        await _publish_evals(job, rows, evals_id)
        await _publish_approval(job, rows)


async def _policy(
    job: PullRequestJob, base_ref: str, cache: dict[str, Config | BasePolicyError]
) -> Config | BasePolicyError:
    if base_ref not in cache:
        try:
            cache[base_ref] = (await read_base(job.gh, job.owner, job.name, base_ref))[1]
        except BasePolicyError as exc:
            cache[base_ref] = exc
    return cache[base_ref]


async def _row(
    job: PullRequestJob,
    pull: dict[str, Any],
    verdict: PullVerdict | None,
    policies: dict[str, Config | BasePolicyError],
    sharing: list[int],
) -> _Row:
    number, base_ref = int(pull["number"]), str(pull["base"]["ref"])
    if verdict is None or verdict.base_ref != base_ref:
        # Not evaluated on this SHA against its base: never taken for a pass.
        if pull.get("draft"):
            title = (
                f"pull request #{number} is a draft and was not evaluated: mark it ready for review, "
                "or close it and comment /eval here"
            )
            return _Row(number, base_ref, None, "action_required", title, False, title)
        job_id = eval_job_id(job.repo, number, job.head_sha) + f":base:{base_ref}"
        await aborts.enqueue_evaluation(job.redis, job_id, job.repo, job.installation_id, number, job.head_sha)
        title = f"waiting for pull request #{number} to be evaluated"
        return _Row(number, base_ref, None, None, title, False, title)
    policy = await _policy(job, base_ref, policies)
    row = _Row(number, base_ref, verdict, verdict.evals, verdict.title, False, "")
    if isinstance(policy, BasePolicyError):
        row.approval_title = "Cannot be approved: the base branch's .evalbot.yml cannot be read"
        row.approval_summary = await job.approval_summary("blocked", [], pr=number, reason=str(policy))
        return row
    approval, counts = None, False
    if verdict.approval == "needed":
        approval = await approval_for(job.store, job.repo, sharing, job.head_sha, verdict)
        # Re-checked when used: an approver removed from the base since the approval no longer counts.
        try:
            counts = approval is not None and await is_approver(job.gh, policy.approvers, approval.approver)
        except RequestFailed as exc:
            missing = missing_permissions(exc)
            if approval is None or not missing:
                raise
            # The installation lost a permission since the approval (Members, for `@org/team` approvers):
            # the approval cannot be checked, so it does not count, and the check says what to grant.
            needed = ", ".join(f"{p.label}: {p.level_label}" for p in missing)
            row.approval_title = f"Approval by {approval.approver} cannot be checked: the app lacks {needed}"
            reason = row.approval_title + " (the app's settings → Permissions & events; the owner then accepts it)"
            row.approval_summary = await job.approval_summary("blocked", policy.approvers, pr=number, reason=reason)
            return row
    author = str((pull.get("user") or {}).get("login") or "")
    decision = decide(verdict, approval, counts, author, policy.allow_self_approval)
    row.approved, row.approval_title = decision.approved, decision.title
    row.approval_summary = await job.approval_summary(decision.state, policy.approvers, pr=number, **decision.data)
    return row


@dataclass(frozen=True)
class Decision:
    """What one pull request's evalbot/approval says: whether it passes, its title, and the state and data
    `approval.md.j2` renders."""

    approved: bool
    title: str
    state: str
    data: dict[str, Any] = field(default_factory=dict)


def decide(
    verdict: PullVerdict, approval: Approval | None, approver_now: bool, author: str, allow_self_approval: bool
) -> Decision:
    """The approval check of a pull request whose evaluation `verdict` counts against its base, with
    `approval` given on it (or on one sharing the evaluation) by someone who is `approver_now` an
    approver of the base's current policy, the pull request written by `author`. Pure: no I/O."""
    if verdict.approval == "not_needed":
        return Decision(True, "No AI artefact changed", "not_needed")
    if verdict.approval == "untrusted":
        return Decision(False, "Waiting for a maintainer's /eval", "untrusted")
    if verdict.approval == "blocked":
        return Decision(False, f"Cannot be approved: {verdict.reason}", "blocked", {"reason": verdict.reason})
    # An approval given on another pull request sharing the evaluation is checked against this one's
    # author too; and a policy change is never its author's call, whatever `allow_self_approval` says.
    self_approved = approval is not None and approval.approver.casefold() == author.casefold()
    by_author = self_approved and (bool(verdict.policy_changes) or not allow_self_approval)
    if approval is not None and approver_now and not by_author:
        title = f"Approved by {approval.approver}" + (" (override)" if approval.override else "")
        return Decision(True, title, "approved", {"approval": approval, "policy_changes": verdict.policy_changes})
    if approval is None:
        title = "Waiting for a lead's /approve" + (" (policy changed)" if verdict.policy_changes else "")
    elif by_author:
        what = "a policy change" if verdict.policy_changes else "it (`allow_self_approval` is off)"
        title = f"Approval by {approval.approver} does not count: the author cannot approve {what}"
    else:
        title = f"Approval by {approval.approver} no longer counts: not an approver of the base now"
    data = {
        "suites": verdict.suites,
        "evals_failed": verdict.evals_failed,
        "tradeoffs": verdict.tradeoffs,
        "revoked": approval.approver if approval and not by_author else None,
        "by_author": by_author,
        "policy_changes": verdict.policy_changes,
    }
    return Decision(False, title, "waiting", data)


def _named(row: _Row, title: str, own: int) -> str:
    return title if row.pr == own else f"#{row.pr} → {row.base_ref}: {title}"


async def _publish_evals(job: PullRequestJob, rows: list[_Row], evals_id: int | None) -> None:
    if evals_id is None:
        return
    # Among equals, a pull request that was evaluated shows its report rather than "nothing changed".
    worst = min(
        rows, key=lambda r: (_EVALS_RANK.get(r.evals, 3), r.verdict is not None and r.verdict.approval == "not_needed")
    )
    table = _table(rows)
    title = _named(worst, worst.evals_title, job.pr_number)
    if worst.evals is None:
        # Another pull request's job will publish the result; until then the check stays open.
        await job.publisher.progress(evals_id, title, table or title)
        return
    summary = worst.verdict.summary if worst.verdict is not None else render_template("pending.md.j2", title=title)
    rerun = worst.verdict is not None and worst.pr == job.pr_number
    notes, more = (worst.verdict.notes, worst.verdict.more_notes) if worst.verdict is not None else ([], 0)
    await job.publisher.complete(
        evals_id, worst.evals, title, table + summary, rerun_button=rerun, notes=notes, more_notes=more
    )


async def _publish_approval(job: PullRequestJob, rows: list[_Row]) -> None:
    blocking = [r for r in rows if not r.approved]
    shown = blocking[0] if blocking else rows[0]
    summary = shown.approval_summary or render_template("pending.md.j2", title=shown.approval_title)
    conclusion: Conclusion = "action_required" if blocking else "success"
    title = _named(shown, shown.approval_title, job.pr_number)
    await job.publisher.post_completed(APPROVAL_CHECK, conclusion, title, _table(rows) + summary, job.details_url)


def _table(rows: list[_Row]) -> str:
    """Which pull requests share this head and what each says; empty for the usual one."""
    if len(rows) < 2:
        return ""
    return render_template("sha_pulls.md.j2", rows=rows)


async def publish_head(ctx: dict[str, Any], repo: str, installation_id: int, head_sha: str) -> str:
    """arq job: publish `head_sha`'s checks again from the open pull requests with that head (one was closed).

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
