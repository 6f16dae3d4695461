"""Merge queues: a merge group's two checks from what was evaluated and approved, with no model call.

GitHub's merge queue asks for the required checks on its own commit (`merge_group.checks_requested`).
The group passes when its pull request's head passed evalbot (evals and approval) and every AI file
of the group commit has content someone evaluated and approved:

- the pull request's approved head has the same blob: what was evaluated and approved lands; or
- the pull request did not change the file (same blob at its head as at the merge base of its head
  with the group's parent) and the group has the blob of a commit evalbot verified: the group's parent
  when it is the base branch's tip or a merge group evalbot passed (recorded per SHA), else the base
  branch's tip. Never "the parent, because the groups ahead passed": with "Only merge non-failing pull
  requests" off (ruleset `grouping_strategy: HEADGREEN`) a failed group ahead lands with the next one.

The approval is checked again against the base branch's current policy, and the queue's setting is read
from the branch's rules and named in the check when it lets a failed group land.

Anything else (a queued pull request ahead changed the same file, a tampered group, a file the pull
request changed that differs from its approved head) fails, naming the files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from arq import Retry
from githubkit.exception import GitHubException, RateLimitExceeded, RequestFailed

from bot.errors import BasePolicyError, InputError
from bot.github.api.client import retry_later, status_of
from bot.github.api.permissions import is_approver
from bot.github.api.publish import Conclusion, Publisher
from bot.github.api.source import GitHubSource, get_pull_request, merge_base
from bot.github.constants import (
    APPROVAL_CHECK,
    EVALS_CHECK,
    GROUP_RESULT_KEY,
    GROUP_RESULT_TTL_S,
    MERGE_QUEUE_BRANCH,
    PARENT_WAIT_DELAYS_S,
    RETRY_DEFER_S,
)
from bot.github.context import github_client, publisher_for
from bot.github.flows.gate import read_base
from bot.github.state.records import job_store, page_url
from bot.github.state.verdicts import PullVerdict, approval_for, verdict_for
from bot.pipeline.config import CONFIG_PATH, Config
from bot.pipeline.files import read_config
from bot.pipeline.render import render_template
from bot.settings import Settings
from bot.store import Store

log = structlog.get_logger(__name__)

_QUEUE_REF = re.compile(f"refs/heads/{MERGE_QUEUE_BRANCH.pattern}")


def queued_pull(head_ref: str, base_ref: str) -> int | None:
    """The pull request number in a merge group's `head_ref`; None when the ref is not of the queue's
    form for branch `base_ref` (`refs/heads/<branch>`)."""
    match = _QUEUE_REF.fullmatch(head_ref)
    if match is None or f"refs/heads/{match['base']}" != base_ref:
        return None
    return int(match["pr"])


@dataclass(frozen=True)
class FileCheck:
    """One AI file: its blob SHA (None: absent) at the approved head, in the group, at the group's parent
    and at the base branch's tip."""

    path: str
    approved: str | None
    group: str | None
    parent: str | None
    changed_by_pull: bool
    ok: bool
    tip: str | None = None


def check_file(
    path: str,
    approved: str | None,
    group: str | None,
    parent: str | None,
    merge_base: str | None,
    tip: str | None = None,
) -> FileCheck:
    """The module's rule for one file: the approved head's content, or, for a file the pull request did
    not change, the base tip's or the group parent's (which `judge` takes only from a verified parent)."""
    changed = approved != merge_base
    ok = group == approved or (not changed and group in (parent, tip))
    return FileCheck(path, approved, group, parent, changed, ok, tip)


@dataclass
class GroupResult:
    """Both checks' answer for a merge group."""

    conclusion: Conclusion
    title: str
    reason: str = ""
    pr: int | None = None
    pr_head: str | None = None
    files: list[FileCheck] = field(default_factory=list)
    # The queue's `grouping_strategy` from the branch's rules (None: unknown), and whether the group's
    # parent was verified (the base tip, or a group evalbot passed).
    grouping: str | None = None
    parent_verified: bool = True


@dataclass(frozen=True)
class MergeGroup:
    """What `merge_group.checks_requested` says: the group commit, its parent and the queue's branch."""

    repo: str
    head_sha: str
    base_sha: str
    base_ref: str
    head_ref: str

    @property
    def branch(self) -> str:
        return self.base_ref.removeprefix("refs/heads/")


class _Refused(Exception):
    """The group fails, for this reason."""


async def _config(source: GitHubSource, sha: str, what: str) -> Config | None:
    try:
        return await read_config(source, sha)
    except InputError as exc:
        raise _Refused(f"the `.evalbot.yml` of {what} ({sha[:7]}) cannot be read: {exc}") from exc


async def judge(gh: Any, redis: Any, group: MergeGroup, app_id: str | None, store: Store) -> GroupResult:
    """Whether the merge group may land, from stored verdicts, published checks and blob SHAs.

    Raises:
        GitHubException: GitHub did not answer what this needs.
    """
    number = queued_pull(group.head_ref, group.base_ref)
    if number is None:
        reason = (
            f"the merge group's ref {group.head_ref!r} is not of the form "
            f"refs/heads/gh-readonly-queue/{group.branch}/pr-{{number}}-{{sha}}: which pull request it holds is unknown"
        )
        return GroupResult("failure", "Cannot tell which pull request this merge group holds", reason)
    owner, name = group.repo.split("/", 1)
    pull = await get_pull_request(gh, owner, name, number)
    head = str(pull["head"]["sha"])
    result = GroupResult("failure", "", pr=number, pr_head=head)
    try:
        verdict = await _check_pull(gh, redis, group, pull, app_id)
        tip = await _check_approval(gh, store, group, pull, verdict)
        result.grouping = await grouping_strategy(gh, owner, name, group.branch)
        result.files = await _check_files(GitHubSource(gh, owner, name), group, head, tip)
        if group.base_sha != tip and any(_on_parent(f) for f in result.files if f.ok):
            # Only the group's parent vouches for some file: it must be a group evalbot passed.
            result.parent_verified = await _parent_passed(redis, group)
            if not result.parent_verified:
                result.files = [dataclasses.replace(f, ok=False) if _on_parent(f) else f for f in result.files]
    except _Refused as exc:
        result.reason = str(exc)
        result.title = f"#{number} cannot merge: {exc}"
        return result
    differ = [f.path for f in result.files if not f.ok]
    if differ:
        result.reason = "the merge group's content of these files was not evaluated and approved: " + ", ".join(differ)
        result.title = f"Differs from what was approved on #{number}: {', '.join(differ)}"
        return result
    result.conclusion = "success"
    result.title = f"Matches what was evaluated and approved on #{number} ({head[:7]})"
    return result


async def _check_pull(gh: Any, redis: Any, group: MergeGroup, pull: dict[str, Any], app_id: str | None) -> PullVerdict:
    """Refuse unless the pull request's head passed evalbot against the queue's branch; its verdict."""
    number, head = int(pull["number"]), str(pull["head"]["sha"])
    if pull.get("state") != "open":
        raise _Refused(f"the pull request is {pull.get('state')}")
    if pull["base"]["ref"] != group.branch:
        raise _Refused(f"the pull request targets {pull['base']['ref']!r}, not the queue's branch {group.branch!r}")
    verdict = await verdict_for(redis, group.repo, head, number, group.branch)
    if verdict is None or verdict.base_ref != group.branch:
        raise _Refused(f"evalbot has no verdict on its head {head[:7]} against {group.branch!r}")
    if verdict.evals != "success":
        raise _Refused(f"evalbot/evals did not pass on its head {head[:7]} ({verdict.evals})")
    owner, name = group.repo.split("/", 1)
    published = Publisher(gh, owner, name, number, head, app_id)
    for check in (EVALS_CHECK, APPROVAL_CHECK):
        run = await published.check_run(check)
        state = "missing" if run is None else str(run.get("conclusion") or run.get("status"))
        if state != "success":
            raise _Refused(f"{check} is {state} on its head {head[:7]}")
    return verdict


async def _check_approval(gh: Any, store: Store, group: MergeGroup, pull: dict[str, Any], verdict: PullVerdict) -> str:
    """Refuse unless the head's approval, when it needs one, counts under the base's policy as it is now
    (the published check may predate an approver's removal), and, for a policy change, is not its author's.
    Returns the base branch's tip the policy was read at."""
    number, head = int(pull["number"]), str(pull["head"]["sha"])
    owner, name = group.repo.split("/", 1)
    try:
        tip, policy = await read_base(gh, owner, name, group.branch)
    except BasePolicyError as exc:
        raise _Refused(f"the base branch's policy cannot be read: {exc}") from exc
    if verdict.approval == "not_needed":
        return tip
    approval = await approval_for(store, group.repo, [number], head, verdict)
    if approval is None:
        raise _Refused(f"its head {head[:7]} has no approval against {group.branch!r}")
    if not await is_approver(gh, policy.approvers, approval.approver):
        raise _Refused(f"the approval by {approval.approver} no longer counts: not an approver of {group.branch!r} now")
    author = str((pull.get("user") or {}).get("login") or "")
    if verdict.policy_changes and approval.approver.casefold() == author.casefold():
        raise _Refused(f"the approval by {approval.approver}, its author, does not count for a policy change")
    return tip


async def grouping_strategy(gh: Any, owner: str, name: str, branch: str) -> str | None:
    """The merge queue's `grouping_strategy` (ALLGREEN, HEADGREEN) from the rules that apply to `branch`
    (REST "Get rules for a branch"); None when no merge queue rule is found or the rules cannot be read."""
    try:
        response = await gh.arequest("GET", f"/repos/{owner}/{name}/rules/branches/{branch}")
    except RequestFailed:
        return None
    rules = response.json()
    for rule in rules if isinstance(rules, list) else []:
        if isinstance(rule, dict) and rule.get("type") == "merge_queue":
            strategy = (rule.get("parameters") or {}).get("grouping_strategy")
            return str(strategy) if strategy else None
    return None


async def _parent_passed(redis: Any, group: MergeGroup) -> bool:
    """Whether the group's parent is a merge group evalbot passed; a group ahead whose checks are still
    being made is waited for, a little (they take no model call)."""
    key = GROUP_RESULT_KEY.format(repo=group.repo, sha=group.base_sha)
    for delay_s in (*PARENT_WAIT_DELAYS_S, None):
        result = await redis.get(key)
        if result is not None or delay_s is None:
            return _text(result) == "success"
        await asyncio.sleep(delay_s)
    return False


def _on_parent(f: FileCheck) -> bool:
    """Whether the file has the group parent's content and neither the approved head's nor the base tip's."""
    return f.group == f.parent and f.group not in (f.approved, f.tip)


async def _check_files(source: GitHubSource, group: MergeGroup, head: str, tip: str) -> list[FileCheck]:
    """Every AI file of the suites the parent, the approved head and the group define, checked by the rule."""
    configs = [
        await _config(source, group.base_sha, "the merge group's parent"),
        await _config(source, head, "the approved head"),
        await _config(source, group.head_sha, "the merge group"),
    ]
    paths = {CONFIG_PATH} | {p for config in configs if config for suite in config.suites for p in suite.paths()}
    # Where the pull request's own changes start: a file with the same blob there and at its head is
    # one the pull request did not change.
    start = await merge_base(source.gh, source.owner, source.repo, group.base_sha, head)
    try:
        # The parent is often the merge base itself: each tree is read once.
        shas = (head, group.head_sha, group.base_sha, start, tip)
        trees = {sha: await source.tree(sha) for sha in dict.fromkeys(shas)}
    except InputError as exc:
        raise _Refused(
            "GitHub truncated a commit's file tree (too many files): the AI files cannot be compared"
        ) from exc
    approved, in_group, parent, before, at_tip = (trees[sha] for sha in shas)
    return [
        check_file(p, approved.get(p), in_group.get(p), parent.get(p), before.get(p), at_tip.get(p))
        for p in sorted(paths)
    ]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _failed(reason: str) -> GroupResult:
    return GroupResult("failure", "evalbot could not check this merge group", reason)


async def _publish(publisher: Publisher, group: MergeGroup, result: GroupResult, details_url: str | None) -> None:
    for check in (EVALS_CHECK, APPROVAL_CHECK):
        summary = render_template("merge_group.md.j2", check=check, group=group, result=result)
        check_id = await publisher.ensure_check(check, details_url)
        await publisher.complete(check_id, result.conclusion, result.title, summary)


async def merge_group_checks(
    ctx: dict[str, Any], repo: str, installation_id: int, head_sha: str, base_sha: str, base_ref: str, head_ref: str
) -> str:
    """Post `evalbot/evals` and `evalbot/approval` on a merge group's commit, completed.

    Args:
        ctx: arq's context: `settings`, `redis`, and optionally `github_factory` (tests).
        repo: "owner/name".
        installation_id: the app installation.
        head_sha: the merge group's commit, where the checks go.
        base_sha: the group's parent commit (the base branch, or the group queued ahead).
        base_ref: the queue's branch, `refs/heads/<branch>`.
        head_ref: the group's ref, `refs/heads/gh-readonly-queue/<branch>/pr-<number>-<sha>`.

    Returns:
        The checks' conclusion, or "github-error" when GitHub took neither.
    """
    settings: Settings = ctx["settings"]
    gh = github_client(ctx, installation_id)
    group = MergeGroup(repo, head_sha, base_sha, base_ref, head_ref)
    publisher = publisher_for(settings, gh, repo, 0, head_sha)
    details_url = page_url(settings)
    bound = log.bind(repo=repo, merge_group=head_sha[:7], job_try=ctx.get("job_try", 1))
    try:
        result = await judge(gh, ctx["redis"], group, settings.APP_ID, job_store(ctx))
        # Recorded before it is published: a group queued behind this one trusts its content only then.
        key = GROUP_RESULT_KEY.format(repo=repo, sha=head_sha)
        await ctx["redis"].set(key, result.conclusion, ex=GROUP_RESULT_TTL_S)
        await _publish(publisher, group, result, details_url)
    except RateLimitExceeded as exc:
        # The installation is blocked for longer than a job waits: the group is judged again once GitHub
        # takes its requests, rather than failed for a limit (the queue waits for its checks meanwhile).
        bound.warning("stopped at GitHub's rate limit; retrying the job", wait_s=exc.retry_after.total_seconds())
        raise Retry(defer=exc.retry_after + timedelta(seconds=5)) from exc
    except GitHubException as exc:
        # As for evaluations: GitHub failing after githubkit's retries is tried again later; a refusal
        # (4xx) or the last try fails the group closed, with the reason, rather than leave it waiting.
        if retry_later(exc, ctx):
            bound.warning("cannot reach GitHub; retrying the job", error=str(exc))
            raise Retry(defer=RETRY_DEFER_S * ctx.get("job_try", 1)) from exc
        result = _failed(
            f"GitHub answered {status_of(exc)} while evalbot read the merge group's pull request and files"
        )
        try:
            await _publish(publisher, group, result, details_url)
        except GitHubException:
            bound.exception("cannot post the merge group's checks")
            return "github-error"
    bound.info("merge group checked", conclusion=result.conclusion, pr=result.pr)
    return result.conclusion
