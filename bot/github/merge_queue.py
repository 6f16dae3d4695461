"""Merge queues: a merge group's two checks from what was evaluated and approved, with no model call.

GitHub's merge queue asks for the required checks on its own commit (`merge_group.checks_requested`).
The group passes when its pull request's head passed evalbot (evals and approval) and every AI file
of the group commit has content someone evaluated and approved:

- the pull request's approved head has the same blob: what was evaluated and approved lands; or
- the pull request did not change the file (same blob at its head as at the merge base of its head
  with the group's parent) and the group has the parent's blob (`merge_group.base_sha`): the base
  branch's content, or that of a pull request queued ahead, which its own merge group checked. A
  group merges only after the groups ahead of it passed, so each file traces back to an approval.

Anything else (a queued pull request ahead changed the same file, a tampered group, a file the pull
request changed that differs from its approved head) fails, naming the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import structlog
from arq import Retry
from githubkit.exception import GitHubException

from bot.errors import InputError
from bot.github.client import installation_client, retry_later, status_of
from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK, RETRY_DEFER_S
from bot.github.gate import verdict_of
from bot.github.publish import Conclusion, Publisher
from bot.github.records import page_url
from bot.github.redact import Redactor
from bot.github.source import GitHubSource, get_pull_request, merge_base
from bot.pipeline.config import CONFIG_PATH, Config
from bot.pipeline.files import read_config
from bot.pipeline.render import render_template
from bot.settings import Settings

log = structlog.get_logger(__name__)

# The merge group's branch: GitHub documents the `gh-readonly-queue/<base branch>/` prefix; the rest,
# `pr-<number>-<parent sha>`, is what GitHub sends (octokit's example payload and real queues).
_QUEUE_REF = re.compile(r"refs/heads/gh-readonly-queue/(?P<base>.+)/pr-(?P<pr>[1-9][0-9]*)-[0-9a-f]{40,64}")


def queued_pull(head_ref: str, base_ref: str) -> int | None:
    """The pull request number in a merge group's `head_ref`; None when the ref is not of the queue's
    form for branch `base_ref` (`refs/heads/<branch>`)."""
    match = _QUEUE_REF.fullmatch(head_ref)
    if match is None or f"refs/heads/{match['base']}" != base_ref:
        return None
    return int(match["pr"])


@dataclass(frozen=True)
class FileCheck:
    """One AI file: its blob SHA (None: absent) at the approved head, in the group, at the group's parent."""

    path: str
    approved: str | None
    group: str | None
    parent: str | None
    changed_by_pull: bool
    ok: bool


def check_file(
    path: str, approved: str | None, group: str | None, parent: str | None, merge_base: str | None
) -> FileCheck:
    """The module's rule for one file: the approved head's content, or, for a file the pull request did
    not change, the group parent's."""
    changed = approved != merge_base
    ok = group == approved or (not changed and group == parent)
    return FileCheck(path, approved, group, parent, changed, ok)


@dataclass
class GroupResult:
    """Both checks' answer for a merge group."""

    conclusion: Conclusion
    title: str
    reason: str = ""
    pr: int | None = None
    pr_head: str | None = None
    files: list[FileCheck] = field(default_factory=list)


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


async def judge(gh: Any, redis: Any, group: MergeGroup, app_id: str | None) -> GroupResult:
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
        await _check_pull(gh, redis, group, pull, app_id)
        result.files = await _check_files(GitHubSource(gh, owner, name), group, head)
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


async def _check_pull(gh: Any, redis: Any, group: MergeGroup, pull: dict[str, Any], app_id: str | None) -> None:
    """Refuse unless the pull request's head passed evalbot against the queue's branch."""
    number, head = int(pull["number"]), str(pull["head"]["sha"])
    if pull.get("state") != "open":
        raise _Refused(f"the pull request is {pull.get('state')}")
    if pull["base"]["ref"] != group.branch:
        raise _Refused(f"the pull request targets {pull['base']['ref']!r}, not the queue's branch {group.branch!r}")
    verdict = await verdict_of(redis, group.repo, head, number)
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


async def _check_files(source: GitHubSource, group: MergeGroup, head: str) -> list[FileCheck]:
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
        trees = {sha: await source.tree(sha) for sha in dict.fromkeys((head, group.head_sha, group.base_sha, start))}
    except InputError as exc:
        raise _Refused(
            "GitHub truncated a commit's file tree (too many files): the AI files cannot be compared"
        ) from exc
    approved, in_group, parent, before = (trees[sha] for sha in (head, group.head_sha, group.base_sha, start))
    return [check_file(p, approved.get(p), in_group.get(p), parent.get(p), before.get(p)) for p in sorted(paths)]


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
    factory = ctx.get("github_factory", installation_client)
    gh = factory(settings, installation_id)
    owner, name = repo.split("/", 1)
    group = MergeGroup(repo, head_sha, base_sha, base_ref, head_ref)
    publisher = Publisher(gh, owner, name, 0, head_sha, settings.APP_ID, Redactor.for_settings(settings))
    details_url = page_url(settings)
    bound = log.bind(repo=repo, merge_group=head_sha[:7], job_try=ctx.get("job_try", 1))
    try:
        result = await judge(gh, ctx["redis"], group, settings.APP_ID)
        await _publish(publisher, group, result, details_url)
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
