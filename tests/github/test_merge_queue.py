"""Merge queues (issue 11): the merge group's commit gets both checks, from what was evaluated and approved,
end to end through the webhook, arq and the fake GitHub, with no model call."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from arq import ArqRedis, Retry
from githubkit import GitHub

from bot.github.api.client import app_auth
from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK, SHORT_JOB_TIMEOUT_S
from bot.github.flows.merge_queue import check_file, merge_group_checks, queued_pull
from bot.github.webhook import Job, route
from bot.settings import Settings
from tests.conftest import GitRepo, prompt_file
from tests.github.conftest import (
    answers,
    build_pr_repo,
    check_run_event,
    check_suite_event,
    fixture,
    signed_headers,
    webhook_client,
)
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import StubLLM

REPO = "Codertocat/Hello-World"
_deliveries = itertools.count(1)
_comments = itertools.count(900)


class Queue:
    """One pull request through evalbot, then through GitHub's merge queue."""

    def __init__(self, http: httpx.AsyncClient, fake: FakeGitHub, run_worker: Any, repo: GitRepo):
        self.http, self.fake, self.run_worker, self.repo = http, fake, run_worker, repo

    async def deliver(self, event: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        headers = signed_headers(body, event, f"mq-{next(_deliveries)}")
        response = await self.http.post("/api/github/webhooks", content=body, headers=headers)
        assert response.status_code == 202, response.text
        await self.run_worker()

    async def open(self, number: int = 2) -> None:
        """Pull request `number`, feature into main, as the branches are now; evaluated by the worker."""
        base, head = (self.repo.git("rev-parse", ref).strip() for ref in ("main", "feature"))
        self.fake.pulls[number] = (base, head)
        payload = fixture("pull_request.opened.json")
        payload["pull_request"].update(number=number, draft=False)
        payload["pull_request"]["base"].update(sha=base, ref="main")
        payload["pull_request"]["head"].update(sha=head, ref="feature")
        await self.deliver("pull_request", payload)

    async def open_pull(self, number: int, branch: str) -> None:
        """Pull request `number`, `branch` into main as the fake GitHub has it; evaluated by the worker."""
        base, head = self.fake.pulls[number]
        payload = fixture("pull_request.opened.json")
        payload["pull_request"].update(number=number, draft=False)
        payload["pull_request"]["base"].update(sha=base, ref="main")
        payload["pull_request"]["head"].update(sha=head, ref=branch)
        await self.deliver("pull_request", payload)

    async def comment(self, body: str, number: int = 2, login: str = "lead") -> None:
        payload = fixture("issue_comment.created.on-pr.DERIVED.json")
        payload["issue"]["number"] = number
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        payload["comment"].update(id=next(_comments), body=body, created_at=now, updated_at=now)
        payload["comment"]["user"].update(login=login, type="User")
        payload["sender"].update(login=login, type="User")
        await self.deliver("issue_comment", payload)

    async def checks_requested(self, group: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Deliver `merge_group.checks_requested` for `group`; the group commit's two check runs after it."""
        payload = fixture("merge_group.checks_requested.json")
        payload["merge_group"].update(group)
        payload["repository"]["full_name"] = REPO
        await self.deliver("merge_group", payload)
        (evals,) = self.fake.runs_named(EVALS_CHECK, group["head_sha"])
        (approval,) = self.fake.runs_named(APPROVAL_CHECK, group["head_sha"])
        return evals, approval


@pytest.fixture
async def queue(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings, run_worker: Any
) -> AsyncIterator[Queue]:
    fake_github.permissions["lead"] = "write"
    stub.handler = answers(9)  # head 90%, base 50%: evals pass, a lead must still approve
    build_pr_repo(repo, ["lead"])
    async with webhook_client(settings, redis) as http:
        yield Queue(http, fake_github, run_worker, repo)


async def approved(queue: Queue, stub: StubLLM) -> int:
    """Pull request 2 evaluated (passing) and approved; the model calls that took."""
    await queue.open()
    await queue.comment("/approve")
    head = queue.fake.pulls[2][1]
    assert queue.fake.runs_named(APPROVAL_CHECK, head)[-1]["conclusion"] == "success"
    return len(stub.requests)


def on_branch(repo: GitRepo, branch: str, start: str, path: str, content: Any) -> str:
    """A commit changing `path` on `branch` (made from `start`); the working copy goes back to `feature`."""
    repo.git("checkout", "-q", "-B", branch, start)
    repo.write(path, content)
    sha = repo.commit(f"{branch}: {path}")
    repo.git("checkout", "-q", "feature")
    return sha


def conclusions(*runs: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["status"], r["conclusion"]) for r in runs]


@pytest.mark.slow
async def test_an_approved_pull_request_passes_its_merge_group_with_no_model_call(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub
) -> None:
    calls = await approved(queue, stub)
    group = fake_github.queue(2)
    before = len(fake_github.requests)

    evals, approval = await queue.checks_requested(group)

    assert conclusions(evals, approval) == [("completed", "success")] * 2
    # The pull request, its two checks, the base branch's tip (its policy: the approver checked again), the
    # queue's rules, three configs (the parent's is the tip's, read once), the merge base, three trees,
    # then two check runs (look up, create, complete).
    assert len([r for r in fake_github.requests[before:] if r[1].startswith("/repos/")]) == 18
    head = fake_github.pulls[2][1]
    assert evals["output"]["title"] == f"Matches what was evaluated and approved on #2 ({head[:7]})"
    assert approval["output"]["title"] == evals["output"]["title"]
    summary = approval["output"]["summary"]
    assert f"## evalbot: ✅ merge group {group['head_sha'][:7]} (evalbot/approval)" in summary
    assert "| `prompts/qa.yaml` |" in summary and "| yes | ✅ |" in summary
    assert len(stub.requests) == calls  # not one model call for the merge group


@pytest.mark.slow
async def test_a_queued_pull_request_ahead_that_changed_the_same_prompt_fails_the_group(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub, repo: GitRepo
) -> None:
    await approved(queue, stub)
    # Another pull request, queued ahead, changed another line of the same prompt: the merge is clean,
    # and the prompt that would land (both changes) was never evaluated.
    ahead = on_branch(repo, "ahead", "main", "prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1", max_tokens=60))
    group = fake_github.queue(2, parent=ahead)

    evals, approval = await queue.checks_requested(group)

    assert conclusions(evals, approval) == [("completed", "failure")] * 2
    assert evals["output"]["title"] == "Differs from what was approved on #2: prompts/qa.yaml"
    assert "| `prompts/qa.yaml` |" in evals["output"]["summary"]
    assert "| yes | ❌ not approved |" in evals["output"]["summary"]


@pytest.mark.slow
async def test_a_tampered_group_fails_naming_the_file(queue: Queue, stub: StubLLM, fake_github: FakeGitHub) -> None:
    await approved(queue, stub)
    # A dataset the pull request did not change, rewritten in the group: neither the approved head's
    # nor the parent's content.
    group = fake_github.queue(2, edits={"evals/qa.jsonl": '{"id": "c0", "question": "q0", "expected": "x"}\n'})

    evals, approval = await queue.checks_requested(group)

    assert conclusions(evals, approval) == [("completed", "failure")] * 2
    assert approval["output"]["title"] == "Differs from what was approved on #2: evals/qa.jsonl"
    summary = approval["output"]["summary"]
    reason = "the merge group's content of these files was not evaluated and approved: evals/qa.jsonl"
    assert f"**Not passed:** {reason}" in summary


@pytest.mark.slow
async def test_a_file_the_base_changed_under_the_pull_request_passes_with_the_base_content(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub, repo: GitRepo
) -> None:
    calls = await approved(queue, stub)
    # After the approval, main took another change of the dataset, which the pull request never touched:
    # the group has main's dataset, which main's own gate let in.
    rows = [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(11)]
    main = on_branch(repo, "main", "main", "evals/qa.jsonl", rows)
    group = fake_github.queue(2)
    assert group["base_sha"] == main

    evals, approval = await queue.checks_requested(group)

    assert conclusions(evals, approval) == [("completed", "success")] * 2
    assert "| `evals/qa.jsonl` |" in evals["output"]["summary"] and "| no | ✅ |" in evals["output"]["summary"]
    assert len(stub.requests) == calls


async def test_headgreen_a_failed_group_ahead_fails_the_next_group(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub, repo: GitRepo
) -> None:
    # "Only merge non-failing pull requests" off: GitHub lands a failed group with the next one that passes.
    fake_github.set_merge_queue("main", "HEADGREEN")
    calls = await approved(queue, stub)
    # Pull request 3, never evaluated, changes the dataset; its group is queued ahead of #2's.
    rows = [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(12)]
    main = repo.git("rev-parse", "main").strip()
    fake_github.pulls[3] = (main, on_branch(repo, "unevaluated", main, "evals/qa.jsonl", rows))
    fake_github.pull_refs[3] = ("main", "unevaluated")
    ahead = fake_github.queue(3)
    ahead_evals, _ = await queue.checks_requested(ahead)
    assert ahead_evals["conclusion"] == "failure"

    # #2's group carries #3's dataset, which #2 did not change: its parent's content, and the parent failed.
    evals, approval = await queue.checks_requested(fake_github.queue(2, parent=ahead["head_sha"]))

    assert conclusions(evals, approval) == [("completed", "failure")] * 2
    assert evals["output"]["title"] == "Differs from what was approved on #2: evals/qa.jsonl"
    summary = evals["output"]["summary"]
    assert "`grouping_strategy: HEADGREEN`" in summary
    assert f"The group's parent {ahead['head_sha'][:7]} is not verified" in summary
    assert len(stub.requests) == calls


async def test_a_group_behind_a_group_evalbot_passed_passes_with_its_content(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub, repo: GitRepo
) -> None:
    fake_github.set_merge_queue("main", "HEADGREEN")
    await approved(queue, stub)
    # Pull request 3 changes only the README: no approval needed, its group passes.
    main = repo.git("rev-parse", "main").strip()
    fake_github.pulls[3] = (main, on_branch(repo, "docs", main, "README.md", "docs\n"))
    fake_github.pull_refs[3] = ("main", "docs")
    await queue.open_pull(3, "docs")
    ahead = fake_github.queue(3)
    assert (await queue.checks_requested(ahead))[0]["conclusion"] == "success"

    evals, approval = await queue.checks_requested(fake_github.queue(2, parent=ahead["head_sha"]))

    assert conclusions(evals, approval) == [("completed", "success")] * 2


def edit_policy(repo: GitRepo, **changes: Any) -> str:
    """Branch `feature` from main with `.evalbot.yml` edited (policy only); its head SHA."""
    repo.git("checkout", "-q", "-B", "feature", "main")
    config = yaml.safe_load((repo.root / ".evalbot.yml").read_text())
    repo.write(".evalbot.yml", {**config, **changes})
    return repo.commit("policy only")


async def test_a_policy_only_change_waits_for_a_base_approver_who_is_not_its_author(
    queue: Queue, repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM
) -> None:
    # The author is an approver, and the base allows self-approval: still not their call for policy.
    base_config = yaml.safe_load((repo.root / ".evalbot.yml").read_text())
    repo.git("checkout", "-q", "main")
    repo.write(".evalbot.yml", {**base_config, "approvers": ["lead", "Codertocat"], "allow_self_approval": True})
    repo.commit("author approves")
    head = edit_policy(repo, approvers=["Codertocat"], thresholds={"accuracy_drop_pp": 50, "min_cases": 10})
    await queue.open()

    evals, approval = (queue.fake.runs_named(name, head)[-1] for name in (EVALS_CHECK, APPROVAL_CHECK))
    assert (evals["conclusion"], approval["conclusion"]) == ("success", "action_required")
    assert evals["output"]["title"].startswith("Policy changed (approvers, thresholds)")
    assert approval["output"]["title"] == "Waiting for a lead's /approve (policy changed)"
    summary = approval["output"]["summary"]
    assert "### ⚠️ Policy changed" in summary
    assert '| `approvers` | `["lead", "Codertocat"]` | `["Codertocat"]` |' in summary
    assert stub.requests == []

    # The merge queue refuses it before approval.
    evals_group, approval_group = await queue.checks_requested(queue.fake.queue(2))
    assert conclusions(evals_group, approval_group) == [("completed", "failure")] * 2

    await queue.comment("/approve my own rules", login="Codertocat")
    assert queue.fake.runs_named(APPROVAL_CHECK, head)[-1]["conclusion"] == "action_required"
    replies = [c["body"] for c in fake_github.comments.values() if "evalbot:sticky" not in c["body"]]
    assert replies[-1].endswith("the author of a pull request cannot approve a change to the policy\n")

    await queue.comment("/approve reviewed the new thresholds", login="lead")
    approved = queue.fake.runs_named(APPROVAL_CHECK, head)[-1]
    assert (approved["conclusion"], approved["output"]["title"]) == ("success", "Approved by lead")
    evals_group, approval_group = await queue.checks_requested(queue.fake.queue(2))
    assert conclusions(evals_group, approval_group) == [("completed", "success")] * 2
    assert stub.requests == []


async def test_a_base_that_moved_on_does_not_make_an_unrelated_pull_request_a_policy_change(
    queue: Queue, repo: GitRepo, stub: StubLLM
) -> None:
    # A docs-only branch starts at main; main then edits `prices:` and the judge.
    repo.git("checkout", "-q", "-B", "feature", "main")
    repo.write("README.md", "docs only\n")
    repo.commit("docs")
    repo.git("checkout", "-q", "main")
    config = yaml.safe_load((repo.root / ".evalbot.yml").read_text())
    prices = {"openai/stub": {"input_per_1k": 0.5, "output_per_1k": 1.0}}
    repo.write(".evalbot.yml", {**config, "prices": prices, "judge": "openai/stub"})
    repo.commit("prices on main")
    repo.git("checkout", "-q", "feature")
    await queue.open()

    head = queue.fake.pulls[2][1]
    approval = queue.fake.runs_named(APPROVAL_CHECK, head)[-1]
    assert (approval["conclusion"], approval["output"]["title"]) == ("success", "No AI artefact changed")
    assert stub.requests == []


async def test_a_pull_request_not_approved_fails_its_group(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub
) -> None:
    await queue.open()
    head = fake_github.pulls[2][1]
    group = fake_github.queue(2)

    evals, approval = await queue.checks_requested(group)

    assert conclusions(evals, approval) == [("completed", "failure")] * 2
    assert evals["output"]["title"] == f"#2 cannot merge: evalbot/approval is action_required on its head {head[:7]}"


@pytest.mark.slow
async def test_failed_evals_fail_the_group_even_when_overridden(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub
) -> None:
    stub.handler = answers(1, base_right=9)  # head 10%, base 90%: the gate fails
    await queue.open()
    await queue.comment("/approve the drop is expected")
    head = fake_github.pulls[2][1]
    assert fake_github.runs_named(APPROVAL_CHECK, head)[-1]["conclusion"] == "success"  # an override
    group = fake_github.queue(2)

    evals, approval = await queue.checks_requested(group)

    assert conclusions(evals, approval) == [("completed", "failure")] * 2
    assert evals["output"]["title"] == f"#2 cannot merge: evalbot/evals did not pass on its head {head[:7]} (failure)"


@pytest.mark.slow
async def test_a_group_whose_pull_request_cannot_be_told_fails_with_the_reason(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub
) -> None:
    await approved(queue, stub)
    group = {**fake_github.queue(2), "head_ref": "refs/heads/gh-readonly-queue/main/feature"}

    evals, approval = await queue.checks_requested(group)

    assert conclusions(evals, approval) == [("completed", "failure")] * 2
    assert evals["output"]["title"] == "Cannot tell which pull request this merge group holds"
    assert (
        "the merge group's ref 'refs/heads/gh-readonly-queue/main/feature' is not of the form "
        "refs/heads/gh-readonly-queue/main/pr-{number}-{sha}: which pull request it holds is unknown"
    ) in evals["output"]["summary"]


def _no_retries(settings: Settings, installation_id: int) -> GitHub[Any]:
    return GitHub(
        app_auth(settings).as_installation(installation_id), base_url=settings.GITHUB_API_URL, auto_retry=False
    )


async def test_github_failing_is_retried_then_fails_the_group_closed(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub, redis: ArqRedis, settings: Settings
) -> None:
    await approved(queue, stub)
    group = fake_github.queue(2)
    args = {"repo": REPO, "installation_id": 1, **group}
    ctx: dict[str, Any] = {"settings": settings, "redis": redis, "github_factory": _no_retries}

    fake_github.fail_next = [502]
    with pytest.raises(Retry):
        await merge_group_checks({**ctx, "job_try": 1}, **args)
    fake_github.fail_next = [502]
    assert await merge_group_checks({**ctx, "job_try": 3}, **args) == "failure"

    for check in (EVALS_CHECK, APPROVAL_CHECK):
        (run,) = fake_github.runs_named(check, group["head_sha"])
        assert (run["conclusion"], run["output"]["title"]) == ("failure", "evalbot could not check this merge group")
        assert (
            "GitHub answered 502 while evalbot read the merge group's pull request and files"
            in (run["output"]["summary"])
        )


async def test_a_merge_group_stopped_at_a_rate_limit_is_judged_again_after_it(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub, redis: ArqRedis, settings: Settings
) -> None:
    await approved(queue, stub)
    group = fake_github.queue(2)
    # GitHub asks the installation to wait ten minutes: longer than a job waits in its slot.
    fake_github.secondary_hits, fake_github.secondary_retry_after_s = 1, 600
    ctx: dict[str, Any] = {"settings": settings, "redis": redis, "job_try": 1}
    with pytest.raises(Retry) as again:
        await merge_group_checks(ctx, repo=REPO, installation_id=1, **group)

    assert again.value.defer_score is not None and again.value.defer_score >= 600_000
    assert fake_github.runs_named(EVALS_CHECK, group["head_sha"]) == []
    assert fake_github.requests_while_limited == []


def test_route_enqueues_checks_requested_from_the_real_payload() -> None:
    payload = fixture("merge_group.checks_requested.json")
    sha = "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d"
    assert route("merge_group", payload, "d-1") == (
        "enqueued",
        Job(
            "merge_group_checks",
            f"evalbot:merge-group:octo-org/octo-repo:{sha}",
            {
                "repo": "octo-org/octo-repo",
                "installation_id": 1,
                "head_sha": sha,
                "base_sha": "380387fbc80638b734a49e1be1c4dfec1c01b33c",
                "base_ref": "refs/heads/main",
                "head_ref": "refs/heads/gh-readonly-queue/main/pr-104-929f8209d40f77f4abc622a499c93a83babdbe64",
            },
        ),
    )
    assert route("merge_group", {**payload, "action": "destroyed"}) == ("ignored: merge_group.destroyed", None)
    forged = {**payload, "merge_group": {**payload["merge_group"], "base_sha": "../../pulls"}}
    with pytest.raises(ValueError, match=r"merge_group\.base_sha as a commit SHA"):
        route("merge_group", forged)


def merge_group_rerun(event: str, group: dict[str, str], check: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `check_run.rerequested` (on `check`) or `check_suite.rerequested` of a merge group's commit, as
    GitHub sends it: the suite on the group's branch, no pull request listed."""
    branch = group["head_ref"].removeprefix("refs/heads/")
    if event == "check_run":
        assert check is not None
        payload = check_run_event("rerequested", check, "lead")
        payload["check_run"]["check_suite"].update(head_branch=branch, head_sha=group["head_sha"], pull_requests=[])
        return payload
    payload = check_suite_event(group["head_sha"], "lead")
    payload["check_suite"]["head_branch"] = branch
    payload["repository"]["full_name"] = REPO
    return payload


@pytest.mark.parametrize("event", ["check_run", "check_suite"])
def test_route_enqueues_a_merge_group_rerun_from_the_real_payload(event: str) -> None:
    sha, parent = "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d", "929f8209d40f77f4abc622a499c93a83babdbe64"
    group = {"head_sha": sha, "head_ref": f"refs/heads/gh-readonly-queue/release/v2/pr-104-{parent}"}
    check = {"id": 7, "name": EVALS_CHECK, "head_sha": sha, "status": "completed", "conclusion": "failure"}
    payload = merge_group_rerun(event, group, check)
    outcome, job = route(event, payload, "d-9")
    assert outcome == "enqueued" and job is not None
    assert (job.function, job.job_id) == ("merge_group_checks", f"evalbot:merge-group:{REPO}:{sha}:rerun:d-9")
    assert job.kwargs == {
        "repo": REPO,
        "installation_id": payload["installation"]["id"],
        "head_sha": sha,
        "base_sha": parent,
        "base_ref": "refs/heads/release/v2",
        "head_ref": group["head_ref"],
    }


@pytest.mark.parametrize("event", ["check_run", "check_suite"])
async def test_a_rerun_on_a_merge_group_judges_it_again(
    queue: Queue, stub: StubLLM, fake_github: FakeGitHub, event: str
) -> None:
    # The group was checked before the pull request was approved: it failed.
    await queue.open()
    group = fake_github.queue(2)
    evals, approval = await queue.checks_requested(group)
    assert conclusions(evals, approval) == [("completed", "failure")] * 2
    await queue.comment("/approve")
    calls = len(stub.requests)

    await queue.deliver(event, merge_group_rerun(event, group, evals))

    runs = [fake_github.runs_named(name, group["head_sha"]) for name in (EVALS_CHECK, APPROVAL_CHECK)]
    assert [len(named) for named in runs] == [2, 2]
    assert conclusions(runs[0][-1], runs[1][-1]) == [("completed", "success")] * 2
    assert len(stub.requests) == calls


def test_the_app_subscribes_to_merge_groups() -> None:
    manifest = yaml.safe_load((Path(__file__).resolve().parents[2] / "app.yml").read_text())
    assert "merge_group" in manifest["default_events"]
    # GitHub sends `merge_group` only to an app with read access to merge queues.
    assert manifest["default_permissions"]["merge_queues"] == "read"


@pytest.mark.parametrize(
    ("head_ref", "base_ref", "pr"),
    [
        ("refs/heads/gh-readonly-queue/main/pr-104-929f8209d40f77f4abc622a499c93a83babdbe64", "refs/heads/main", 104),
        ("refs/heads/gh-readonly-queue/release/v2/pr-7-" + "a" * 40, "refs/heads/release/v2", 7),
        ("refs/heads/gh-readonly-queue/main/pr-7-" + "a" * 40, "refs/heads/release", None),  # another branch
        ("refs/heads/gh-readonly-queue/main/pr-7", "refs/heads/main", None),
        ("refs/heads/gh-readonly-queue/main/pr-07-" + "a" * 40, "refs/heads/main", None),
        ("refs/heads/feature/pr-7-" + "a" * 40, "refs/heads/main", None),
    ],
)
def test_queued_pull_reads_the_queue_ref(head_ref: str, base_ref: str, pr: int | None) -> None:
    assert queued_pull(head_ref, base_ref) == pr


@pytest.mark.parametrize(
    ("approved_blob", "group", "parent", "merge_base", "ok"),
    [
        ("h", "h", "b", "m", True),  # the approved content lands
        ("h", "b", "b", "m", False),  # the pull request's change is not in the group
        ("h", "x", "b", "m", False),  # merged with another change
        ("m", "b", "b", "m", True),  # untouched by the pull request: the parent's content
        ("m", "x", "b", "m", False),  # untouched, and neither the parent's nor the approved content
        (None, None, "b", "m", True),  # deleted by the pull request, absent from the group
        (None, "m", "m", "m", False),  # deleted by the pull request, back in the group
    ],
)
def test_the_file_rule(approved_blob: str | None, group: str | None, parent: str, merge_base: str, ok: bool) -> None:
    assert check_file("f", approved_blob, group, parent, merge_base).ok is ok


def test_the_worker_runs_merge_group_checks_as_a_short_job() -> None:
    from bot.github.worker.registry import WorkerSettings

    (job,) = [f for f in WorkerSettings.functions if getattr(f, "name", None) == "merge_group_checks"]
    assert job.timeout_s == SHORT_JOB_TIMEOUT_S
