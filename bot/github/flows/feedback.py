"""The feedback loop: production feedback checked against the default branch's suite (for
`POST /api/feedback`), and on `feedback.merge`'s schedule one pull request, opened by the app, that
writes the confirmed feedback not yet proposed into the suites' datasets (one branch, one commit, each
row carrying its lineage). The gate evaluates that pull request like any other (flows/evaluate.py trusts it while
its head is the app's commit)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import structlog
from githubkit import GitHub
from githubkit.exception import GitHubException, RequestFailed

from bot.engine.patterns import BoundedValidator, PatternError, bounded_errors
from bot.errors import InputError
from bot.github.api.source import GitHubSource
from bot.github.context import github_client
from bot.github.flows.schedule import default_branch_head, due_firing
from bot.github.state.records import job_store
from bot.pipeline.config import Config, Lineage, Suite
from bot.pipeline.data_quality import load_row_schema
from bot.pipeline.datasets import DEFAULT_ID_FIELD, dataset_format
from bot.pipeline.files import read_config, read_file
from bot.pipeline.render import render_template
from bot.store import Store
from bot.store.feedback import (
    Feedback,
    claim_merge_firing,
    feedback_repositories,
    mark_proposed,
    pending_feedback,
)
from bot.store.pages import installation_of

log = structlog.get_logger(__name__)

# The expected-answer field of a suite that names none (graders compare with it).
DEFAULT_EXPECTED_FIELD = "expected"
# Fields every merged row carries besides the suite's own: the feedback's id (lineage).
FEEDBACK_ID_FIELD = "feedback_id"
# Where the app's branches of feedback rows go: `evalbot/feedback-<first id>-<last id>`.
BRANCH_PREFIX = "evalbot/feedback-"


class FeedbackRefused(Exception):
    """Feedback the default branch's `.evalbot.yml` does not take: `status` is the HTTP answer's."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FeedbackSuite:
    """What a feedback row of a suite looks like, as the default branch defines the suite."""

    dataset: str
    id_field: str = DEFAULT_ID_FIELD
    expected_field: str = DEFAULT_EXPECTED_FIELD
    source_field: str = Lineage().source_field
    validator: BoundedValidator | None = None

    @classmethod
    def of(cls, suite: Suite, validator: BoundedValidator | None = None) -> FeedbackSuite:
        assert suite.dataset is not None  # a promptfoo suite is refused before
        return cls(
            suite.dataset,
            suite.id_field or DEFAULT_ID_FIELD,
            suite.expected_field or DEFAULT_EXPECTED_FIELD,
            (suite.lineage or Lineage()).source_field,
            validator,
        )

    @property
    def reserved(self) -> set[str]:
        """Row fields evalbot writes itself: an input field by one of these names is refused."""
        return {self.id_field, self.expected_field, self.source_field, FEEDBACK_ID_FIELD}

    def row(self, feedback: Feedback) -> dict[str, Any]:
        return feedback.row(self.id_field, self.expected_field, self.source_field)

    def problems(self, feedback: Feedback) -> list[str]:
        """Why `feedback` cannot become a row of this suite: an input field evalbot writes itself, or the
        row (its output standing in for a missing reference answer) breaking the suite's row schema."""
        clashes = sorted(self.reserved & set(feedback.inputs))
        if clashes:
            return [f"inputs.{name}: evalbot writes this field of the row itself" for name in clashes]
        if self.validator is None:
            return []
        row = self.row(feedback)
        if row[self.expected_field] is None:
            row[self.expected_field] = feedback.output
        try:
            errors = bounded_errors(self.validator, row)
        except PatternError as exc:
            return [f"the row schema could not be checked: {exc}"]
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '(row)'}: {e.message}" for e in errors]


def dataset_suite(config: Config, name: str) -> Suite:
    """Suite `name` of `config`, when it reads a dataset file (rows can be added to it).

    Raises:
        FeedbackRefused: no such suite, or a promptfoo suite.
    """
    suite = config.suite(name)
    if suite is None:
        raise FeedbackRefused(422, f"suite: the default branch's .evalbot.yml has no suite named {name!r}")
    if suite.dataset is None:
        raise FeedbackRefused(422, f"suite: {name!r} reads its cases from a promptfoo config, not a dataset file")
    return suite


def usable_suite(config: Config | None, name: str) -> Suite:
    """The suite `name` of the default branch's config, when the app can write feedback into its dataset.

    Raises:
        FeedbackRefused: feedback is not enabled, no such suite, or its dataset is not JSONL.
    """
    if config is None or config.feedback is None:
        raise FeedbackRefused(403, "feedback is not enabled: the default branch's .evalbot.yml has no `feedback:`")
    suite = dataset_suite(config, name)
    assert suite.dataset is not None  # dataset_suite refuses a suite without one
    if dataset_format(suite.dataset) != "jsonl":
        raise FeedbackRefused(422, f"suite: feedback rows are appended to JSONL datasets; {suite.dataset} is not one")
    return suite


async def feedback_suite(gh: GitHub[Any], repo: str, name: str) -> FeedbackSuite:
    """Suite `name` as the default branch's head defines it, with its row schema.

    Raises:
        FeedbackRefused: see `usable_suite`; 502 when the config or schema cannot be read.
        GitHubException: GitHub did not answer.
    """
    owner, repo_name = repo.split("/", 1)
    _branch, sha = await default_branch_head(gh, owner, repo_name)
    source = GitHubSource(gh, owner, repo_name)
    try:
        config = await read_config(source, sha)
        suite = usable_suite(config, name)
        assert config is not None  # usable_suite refuses a missing config
        if suite.schema_ is None:
            return FeedbackSuite.of(suite)
        text = await read_file(source, sha, suite.schema_, config.limits)
        if text is None:
            raise FeedbackRefused(502, f"the suite's row schema {suite.schema_} is missing on the default branch")
        _schema, validator = await asyncio.to_thread(load_row_schema, suite.schema_, text)
    except InputError as exc:
        raise FeedbackRefused(502, f"the default branch's files cannot be read: {exc}") from None
    return FeedbackSuite.of(suite, validator)


async def check_feedback_merges(ctx: dict[str, Any], now: float | None = None) -> list[str]:
    """arq cron: enqueue `merge_feedback` for each repository with a feedback token whose default
    branch's `feedback.merge: {cron: ...}` fired since its last merge. Returns the repositories enqueued."""
    store = job_store(ctx)
    now = time.time() if now is None else now
    enqueued = []
    for known in await asyncio.to_thread(feedback_repositories, store):
        installation = await asyncio.to_thread(installation_of, store, known.repository)
        if installation is None:
            continue
        owner, name = known.repository.split("/", 1)
        try:
            gh = github_client(ctx, installation)
            _branch, sha = await default_branch_head(gh, owner, name)
            config = await read_config(GitHubSource(gh, owner, name), sha)
        except (GitHubException, InputError) as exc:
            log.warning("feedback schedule unreadable", repo=known.repository, error=str(exc))
            continue
        if config is None or config.feedback is None or config.feedback.merge is None:
            continue
        last = known.last_merge_fire_at.timestamp() if known.last_merge_fire_at else None
        fire = due_firing(config.feedback.merge.cron, now, known.created_at.timestamp(), last)
        if fire is None or not await asyncio.to_thread(claim_merge_firing, store, known.repository, fire):
            continue
        await ctx["redis"].enqueue_job(
            merge_feedback.__name__,
            _job_id=f"feedback:{known.repository}:{int(fire)}",
            repo=known.repository,
            installation_id=installation,
        )
        enqueued.append(known.repository)
    return enqueued


def appended(text: str, rows: list[dict[str, Any]]) -> str:
    """`text` (a JSONL dataset, possibly empty) with `rows` as new lines at its end."""
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return text + ("\n" if text and not text.endswith("\n") else "") + lines


async def merge_feedback(ctx: dict[str, Any], repo: str, installation_id: int) -> str:
    """Open one pull request writing `repo`'s confirmed feedback, not yet proposed, into the datasets of
    its suites on the default branch: a branch and one commit made through the Git Data API. Feedback
    of a suite the branch no longer has (or whose dataset feedback cannot go into) stays pending.

    Returns:
        "opened #<number>", or "nothing" when no feedback is waiting.
    """
    store: Store = job_store(ctx)
    pending = await asyncio.to_thread(pending_feedback, store, repo)
    if not pending:
        return "nothing"
    owner, name = repo.split("/", 1)
    gh = github_client(ctx, installation_id)
    branch, sha = await default_branch_head(gh, owner, name)
    source = GitHubSource(gh, owner, name)
    config = await read_config(source, sha)
    by_suite: dict[str, list[Feedback]] = defaultdict(list)
    for item in pending:
        by_suite[item.suite].append(item)
    files: dict[str, str] = {}
    written: list[tuple[str, str, list[Feedback]]] = []
    for suite_name, items in by_suite.items():
        try:
            suite = FeedbackSuite.of(usable_suite(config, suite_name))
        except FeedbackRefused as exc:
            log.warning("feedback left pending", repo=repo, suite=suite_name, reason=str(exc))
            continue
        assert config is not None  # usable_suite refuses a missing config
        if suite.dataset not in files:
            files[suite.dataset] = await read_file(source, sha, suite.dataset, config.limits) or ""
        files[suite.dataset] = appended(files[suite.dataset], [suite.row(item) for item in items])
        written.append((suite_name, suite.dataset, items))
    if not written:
        return "nothing"
    ids = [item.id for _suite, _path, items in written for item in items]
    base = f"/repos/{owner}/{name}/git"
    tree = (await gh.arequest("GET", f"{base}/commits/{sha}")).json()["tree"]["sha"]
    entries = []
    for path, text in files.items():
        blob = (await gh.arequest("POST", f"{base}/blobs", json={"content": text, "encoding": "utf-8"})).json()
        entries.append({"path": path, "mode": "100644", "type": "blob", "sha": blob["sha"]})
    new_tree = (await gh.arequest("POST", f"{base}/trees", json={"base_tree": tree, "tree": entries})).json()["sha"]
    message = render_template("feedback_commit.md.j2", written=written).strip()
    commit = (
        await gh.arequest("POST", f"{base}/commits", json={"message": message, "tree": new_tree, "parents": [sha]})
    ).json()["sha"]
    head = f"{BRANCH_PREFIX}{min(ids)}-{max(ids)}"
    try:
        await gh.arequest("POST", f"{base}/refs", json={"ref": f"refs/heads/{head}", "sha": commit})
    except RequestFailed as exc:
        if exc.response.status_code != 422:
            raise
        # The branch of these same rows, made by an earlier try that stopped before marking them: the
        # app's own, moved to this commit.
        await gh.arequest("PATCH", f"{base}/refs/heads/{quote(head)}", json={"sha": commit, "force": True})
    body = render_template("feedback_pull.md.j2", written=written, branch=branch, sha=sha)
    title = f"evalbot: {len(ids)} feedback rows into " + ", ".join(path for _s, path, _i in written)
    number = await _open_pull(gh, owner, name, head, {"title": title[:255], "head": head, "base": branch, "body": body})
    await asyncio.to_thread(mark_proposed, store, ids, number, commit)
    await asyncio.to_thread(
        store.append_audit, repo, "feedback_proposed", "evalbot", pr=number, sha=commit, feedback=ids, branch=head
    )
    log.info("feedback pull request", repo=repo, pr=number, rows=len(ids))
    return f"opened #{number}"


async def _open_pull(gh: GitHub[Any], owner: str, name: str, head: str, pull: dict[str, Any]) -> int:
    """The number of the open pull request from branch `head`: one an earlier try opened, else a new one."""
    listed = await gh.arequest(
        "GET", f"/repos/{owner}/{name}/pulls", params={"head": f"{owner}:{head}", "state": "open"}
    )
    for found in listed.json():
        return int(found["number"])
    return int((await gh.arequest("POST", f"/repos/{owner}/{name}/pulls", json=pull)).json()["number"])
