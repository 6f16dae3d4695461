"""The gate holds (issue 9 §1, §2, §4): one verdict per commit, policy from the base branch's tip, and
approvals bound to what the lead saw — each attack end to end through the webhook, arq and the fake GitHub."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import yaml
from arq import ArqRedis

from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK
from bot.github.state.spend import PULL_SPEND_KEY
from bot.settings import Settings
from tests.conftest import GitRepo, prompt_file
from tests.github.conftest import answers, build_pr_repo, fixture, signed_headers, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import StubLLM

REPO = "Codertocat/Hello-World"
_deliveries = itertools.count(1)
_comments = itertools.count(700)


class Gate:
    """Drives several pull requests of one repository: deliveries as GitHub sends them, then the worker."""

    def __init__(self, http: httpx.AsyncClient, fake: FakeGitHub, run_worker: Any, repo: GitRepo):
        self.http, self.fake, self.run_worker, self.repo = http, fake, run_worker, repo

    def sha(self, ref: str) -> str:
        return self.repo.git("rev-parse", ref).strip()

    async def deliver(self, event: str, payload: dict[str, Any]) -> httpx.Response:
        body = json.dumps(payload).encode()
        response = await self.http.post(
            "/api/github/webhooks", content=body, headers=signed_headers(body, event, f"gate-{next(_deliveries)}")
        )
        assert response.status_code == 202, response.text
        return response

    def open(self, number: int, base_ref: str, head_ref: str = "feature", fork_of: str | None = None) -> None:
        """Pull request `number` on the fake GitHub: `head_ref` into `base_ref`, as the branches are now;
        from a fork by `fork_of` when given."""
        self.fake.pulls[number] = (self.sha(base_ref), self.sha(head_ref))
        self.fake.pull_refs[number] = (base_ref, head_ref)
        if fork_of is not None:
            self.fake.fork_pulls.add(number)
            self.fake.pull_authors[number] = fork_of

    def pr_payload(self, number: int, action: str) -> dict[str, Any]:
        name = "pull_request.edited.base-changed.DERIVED.json" if action == "edited" else f"pull_request.{action}.json"
        payload = fixture(name)
        base_ref, head_ref = self.fake.pull_refs[number]
        base, head = self.fake.pulls[number]
        payload["number"] = number
        payload["pull_request"].update(number=number, draft=number in self.fake.drafts)
        payload["pull_request"]["base"].update(sha=base, ref=base_ref)
        payload["pull_request"]["head"].update(sha=head, ref=head_ref)
        return payload

    async def event(self, number: int, action: str = "opened", run: bool = True, **changes: Any) -> None:
        payload = self.pr_payload(number, action)
        if changes:
            payload["changes"] = changes
        await self.deliver("pull_request", payload)
        if run:
            await self.run_worker()

    async def comment(
        self, number: int, login: str, body: str, created_at: str | None = None, run: bool = True
    ) -> None:
        payload = fixture("issue_comment.created.on-pr.DERIVED.json")
        payload["issue"]["number"] = number
        now = created_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        payload["comment"].update(id=next(_comments), body=body, created_at=now, updated_at=now)
        payload["comment"]["user"].update(login=login, type="User")
        payload["sender"].update(login=login, type="User")
        await self.deliver("issue_comment", payload)
        if run:
            await self.run_worker()

    def latest(self, name: str, sha: str) -> dict[str, Any]:
        return self.fake.runs_named(name, sha)[-1]

    def conclusions(self, sha: str) -> tuple[str, str]:
        return self.latest(EVALS_CHECK, sha)["conclusion"], self.latest(APPROVAL_CHECK, sha)["conclusion"]

    def ever_approved(self, sha: str) -> bool:
        """Whether `evalbot/approval` on `sha` was ever written as `success` (runs are updated in place)."""
        ids = {f"/repos/{REPO}/check-runs/{r['id']}" for r in self.fake.runs_named(APPROVAL_CHECK, sha)}
        return any(
            body.get("conclusion") == "success"
            and (path in ids or (method == "POST" and body.get("head_sha") == sha and body["name"] == APPROVAL_CHECK))
            for method, path, body in self.fake.bodies
        )

    def replies(self) -> list[str]:
        return [c["body"] for c in self.fake.comments.values() if "evalbot:sticky" not in c["body"]]


@pytest.fixture
async def gate(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings, run_worker: Any
) -> AsyncIterator[Gate]:
    fake_github.permissions["lead"] = "write"
    stub.handler = answers(9)  # head 90%, base 50%: evals pass, a lead must still approve
    async with webhook_client(settings, redis) as http:
        yield Gate(http, fake_github, run_worker, repo)


def sandbox_repo(repo: GitRepo) -> str:
    """main: suite qa at prompt v1; `sandbox`: the prompt change; `feature`: sandbox + a README commit."""
    build_pr_repo(repo, ["lead"])
    repo.git("branch", "sandbox")
    repo.write("README.md", "docs\n")
    return repo.commit("readme")


def on_main(repo: GitRepo, path: str, content: str | dict[str, Any]) -> str:
    """A commit on main after the pull request's last push; the working copy goes back to `feature`."""
    repo.git("checkout", "-q", "main")
    repo.write(path, content)
    sha = repo.commit(f"main: {path}")
    repo.git("checkout", "-q", "feature")
    return sha


def with_approvers(repo: GitRepo, approvers: list[str]) -> dict[str, Any]:
    """main's `.evalbot.yml` with other approvers."""
    config: dict[str, Any] = yaml.safe_load(repo.git("show", "main:.evalbot.yml"))
    return {**config, "approvers": approvers}


@pytest.mark.slow
async def test_sandbox_pull_request_opened_after_the_real_one_does_not_turn_the_sha_green(
    gate: Gate, repo: GitRepo, stub: StubLLM
) -> None:
    head = sandbox_repo(repo)
    gate.open(2, "main")
    await gate.event(2)
    assert gate.conclusions(head) == ("success", "action_required")
    gate.open(3, "sandbox")  # no AI file changed between sandbox and feature
    await gate.event(3)

    assert gate.conclusions(head) == ("success", "action_required")
    approval = gate.latest(APPROVAL_CHECK, head)
    assert approval["output"]["title"] == "#2 → main: Waiting for a lead's /approve"
    assert "**This commit is the head of 2 open pull requests.**" in approval["output"]["summary"]
    assert (
        "| #3 → `sandbox` | success: No prompt, config or dataset changed | ✅ No AI artefact changed |"
        in (approval["output"]["summary"])
    )
    assert len(stub.requests) == 20  # only pull request 2 was evaluated
    assert not gate.ever_approved(head)

    await gate.comment(2, "lead", "/approve")
    assert gate.conclusions(head) == ("success", "success")
    assert gate.latest(APPROVAL_CHECK, head)["output"]["title"] == "Approved by lead"


@pytest.mark.slow
async def test_sandbox_pull_request_retargeted_to_main_is_evaluated_and_waits(
    gate: Gate, repo: GitRepo, stub: StubLLM
) -> None:
    head = sandbox_repo(repo)
    gate.open(3, "sandbox")
    await gate.event(3)
    assert gate.conclusions(head) == ("success", "success") and stub.requests == []

    gate.open(3, "main")  # the same head, now into main
    await gate.event(3, "edited", base={"ref": {"from": "sandbox"}, "sha": {"from": gate.sha("sandbox")}})

    assert gate.conclusions(head) == ("success", "action_required")
    assert gate.latest(APPROVAL_CHECK, head)["output"]["title"] == "Waiting for a lead's /approve"
    assert gate.latest(EVALS_CHECK, head)["output"]["title"].startswith("qa: accuracy 50.0% → 90.0%")
    assert len(stub.requests) == 20


@pytest.mark.slow
async def test_a_retarget_replans_and_needs_a_new_approval(gate: Gate, repo: GitRepo, stub: StubLLM) -> None:
    build_pr_repo(repo, ["lead"])
    head = gate.sha("feature")
    repo.git("branch", "release", "main")  # the same commit as main, another branch
    repo.git("branch", "shipped", "feature")  # already has the prompt change
    gate.open(2, "main")
    await gate.event(2)
    await gate.comment(2, "lead", "/approve")
    assert gate.conclusions(head) == ("success", "success")

    # The lead approved the diff into main; into another branch it is another review.
    gate.open(2, "release")
    await gate.event(2, "edited", base={"ref": {"from": "main"}, "sha": {"from": gate.sha("main")}})
    assert gate.conclusions(head) == ("success", "action_required")
    assert gate.latest(APPROVAL_CHECK, head)["output"]["title"] == "Waiting for a lead's /approve"

    # Against a base that already has the change, the plan is "nothing changed".
    gate.open(2, "shipped")
    await gate.event(2, "edited", base={"ref": {"from": "release"}, "sha": {"from": gate.sha("release")}})
    assert gate.conclusions(head) == ("success", "success")
    assert gate.latest(EVALS_CHECK, head)["output"]["title"] == "No prompt, config or dataset changed"


@pytest.mark.slow
async def test_a_prompt_change_past_file_3000_is_evaluated(gate: Gate, repo: GitRepo, stub: StubLLM) -> None:
    build_pr_repo(repo, ["lead"])
    for i in range(3001):
        (repo.root / "assets" / f"{i:04}.txt").parent.mkdir(exist_ok=True)
        (repo.root / "assets" / f"{i:04}.txt").write_text(f"{i}\n")
    head = repo.commit("3,001 files beside the prompt change")
    gate.open(2, "main")
    assert gate.fake.pulls[2][1] == head
    await gate.event(2)

    assert gate.conclusions(head) == ("success", "action_required")
    assert gate.latest(EVALS_CHECK, head)["output"]["title"].startswith("qa: accuracy 50.0% → 90.0%")
    assert len(stub.requests) == 20
    assert not gate.ever_approved(head)


async def test_a_queued_job_for_an_older_sha_is_cancelled_by_the_push(gate: Gate, repo: GitRepo, stub: StubLLM) -> None:
    build_pr_repo(repo, ["lead"])
    old_head = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2, run=False)  # queued, not yet run
    # The next push takes the prompt change back out: the pull request's diff has no AI file now.
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    repo.write("README.md", "docs\n")
    new_head = repo.commit("revert the prompt")
    gate.open(2, "main")
    await gate.event(2, "synchronize")

    assert gate.conclusions(new_head) == ("success", "success")
    # The older SHA's job was aborted before it started: no call, and nothing on that SHA that passes.
    assert gate.fake.runs_named(EVALS_CHECK, old_head) == []
    assert stub.requests == []
    assert not gate.ever_approved(old_head)


@pytest.mark.slow
async def test_a_lead_removed_from_the_base_after_the_push_cannot_approve(
    gate: Gate, repo: GitRepo, stub: StubLLM
) -> None:
    build_pr_repo(repo, ["lead"])
    head = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2)
    await gate.comment(2, "lead", "/approve")
    assert gate.conclusions(head) == ("success", "success")

    on_main(repo, ".evalbot.yml", with_approvers(repo, ["boss"]))
    # The approval is used again (a re-run publishes the checks): the approver is re-checked.
    await gate.comment(2, "Codertocat", "/eval")
    approval = gate.latest(APPROVAL_CHECK, head)
    assert (approval["conclusion"], approval["output"]["title"]) == (
        "action_required",
        "Approval by lead no longer counts: not an approver of the base now",
    )
    assert "Approvers (from the base branch's `.evalbot.yml`): boss." in approval["output"]["summary"]

    await gate.comment(2, "lead", "/approve again")
    assert gate.latest(APPROVAL_CHECK, head)["conclusion"] == "action_required"
    assert gate.replies()[-1] == (
        "@lead `/approve again`: only approvers listed in the base branch's `.evalbot.yml` may approve\n"
    )
    await gate.comment(2, "boss", "/approve numbers checked")
    assert gate.latest(APPROVAL_CHECK, head)["output"]["title"].startswith("Approved by boss")


async def test_an_unreadable_base_config_fails_closed(gate: Gate, repo: GitRepo, stub: StubLLM) -> None:
    build_pr_repo(repo, ["lead"])
    head = gate.sha("feature")
    gate.open(2, "main")
    on_main(repo, ".evalbot.yml", "approvers: [lead\nsuites: []\n")  # broken after the pull request's push
    await gate.event(2)

    evals = gate.latest(EVALS_CHECK, head)
    assert (evals["conclusion"], evals["output"]["title"]) == (
        "failure",
        "The base branch's .evalbot.yml cannot be read",
    )
    assert ".evalbot.yml:" in evals["output"]["summary"] and "cannot be parsed (main at" in evals["output"]["summary"]
    assert gate.latest(APPROVAL_CHECK, head)["conclusion"] == "action_required"
    assert stub.requests == []

    await gate.comment(2, "lead", "/approve the base is broken anyway")
    assert gate.replies()[-1].startswith(
        "@lead `/approve the base is broken anyway`: no approval is accepted while the base branch's policy "
        "cannot be read: .evalbot.yml:"
    )
    assert not gate.ever_approved(head)


@pytest.mark.slow
async def test_an_approve_written_before_a_push_does_not_approve_it(gate: Gate, repo: GitRepo) -> None:
    build_pr_repo(repo, ["lead"])
    gate.open(2, "main")
    await gate.event(2)
    repo.write("prompts/qa.yaml", prompt_file("1.2.0", system_prompt="v2 more"))
    head = repo.commit("push")
    gate.open(2, "main")
    await gate.event(2, "synchronize")

    await gate.comment(2, "lead", "/approve", created_at="2020-01-01T00:00:00Z")
    assert gate.conclusions(head) == ("success", "action_required")
    assert "got new commits after this comment" in gate.replies()[-1]
    assert "comment `/approve` again to approve the current head" in gate.replies()[-1]
    assert not gate.ever_approved(head)


@pytest.mark.slow
async def test_approve_names_the_commit_it_approves(gate: Gate, repo: GitRepo) -> None:
    build_pr_repo(repo, ["lead"])
    first = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2)
    repo.write("prompts/qa.yaml", prompt_file("1.2.0", system_prompt="v2 more"))
    head = repo.commit("push")
    gate.open(2, "main")
    await gate.event(2, "synchronize")

    await gate.comment(2, "lead", f"/approve {first[:7]} what I reviewed")
    assert not gate.ever_approved(head) and not gate.ever_approved(first)
    assert gate.replies()[-1] == (
        f"@lead `/approve {first[:7]} what I reviewed`: `{first[:7]}` is not the head of this pull request "
        f"(`{head[:7]}`): only the head can be approved\n"
    )

    await gate.comment(2, "lead", f"/approve {head[:10].upper()} ship it")
    approval = gate.latest(APPROVAL_CHECK, head)
    assert (approval["conclusion"], approval["output"]["title"]) == ("success", "Approved by lead")
    assert f"`{head[:7]}` approved by @lead: “ship it”" in approval["output"]["summary"]


@pytest.mark.slow
async def test_the_rerun_button_on_an_older_sha_runs_nothing(
    gate: Gate, repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM
) -> None:
    build_pr_repo(repo, ["lead"])
    fake_github.fork_pulls.add(2)
    first = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2)
    await gate.comment(2, "Codertocat", "/eval")  # a writer vouches for this commit
    assert len(stub.requests) == 20
    repo.write("prompts/qa.yaml", prompt_file("1.2.0", system_prompt="v2 more"))
    head = repo.commit("a fork's new push")
    gate.open(2, "main")
    await gate.event(2, "synchronize")
    assert gate.latest(EVALS_CHECK, head)["conclusion"] == "action_required"

    # The button on the first commit's check run must not evaluate the unseen new head.
    old_run = gate.latest(EVALS_CHECK, first)
    payload = fixture("check_run.requested_action.json")
    payload["check_run"].update(id=old_run["id"], name=EVALS_CHECK, head_sha=first)
    payload["check_run"]["pull_requests"] = [{"number": 2, "head": {"sha": first}, "base": {"ref": "main"}}]
    payload["requested_action"] = {"identifier": "rerun"}
    payload["repository"]["full_name"] = REPO
    payload["installation"] = {"id": 1}
    payload["sender"]["login"] = "Codertocat"
    await gate.deliver("check_run", payload)
    await gate.run_worker()

    assert len(stub.requests) == 20
    assert gate.latest(EVALS_CHECK, head)["conclusion"] == "action_required"
    assert gate.replies()[-1] == (
        f"@Codertocat `Re-run evals (button)`: the button is on `{first[:7]}`, which is no longer the head of "
        f"this pull request (`{head[:7]}`): nothing was run\n"
    )


@pytest.mark.slow
async def test_a_draft_push_is_recorded_so_an_older_approve_does_not_act_on_it(gate: Gate, repo: GitRepo) -> None:
    build_pr_repo(repo, ["lead"])
    first = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2)
    repo.write("prompts/qa.yaml", prompt_file("1.2.0", system_prompt="v2 more"))
    repo.commit("push")
    gate.open(2, "main")
    await gate.event(2, "synchronize")
    # Turned into a draft and force-pushed back to the first commit (evaluated before).
    gate.fake.drafts.add(2)
    repo.git("reset", "-q", "--hard", first)
    gate.open(2, "main")
    await gate.event(2, "synchronize")

    await gate.comment(2, "lead", "/approve", created_at="2020-01-01T00:00:00Z")
    assert not gate.ever_approved(first)
    assert gate.latest(APPROVAL_CHECK, first)["conclusion"] == "action_required"
    assert "got new commits after this comment" in gate.replies()[-1]


async def test_a_draft_with_the_same_head_keeps_the_sha_from_passing(gate: Gate, repo: GitRepo, stub: StubLLM) -> None:
    head = sandbox_repo(repo)
    gate.open(2, "main")
    gate.fake.drafts.add(2)  # feature → main, a draft: not evaluated
    await gate.event(2)
    gate.open(3, "sandbox")
    await gate.event(3)

    title = (
        "#2 → main: pull request #2 is a draft and was not evaluated: mark it ready for review, "
        "or close it and comment /eval here"
    )
    for name in (EVALS_CHECK, APPROVAL_CHECK):
        run = gate.latest(name, head)
        assert (run["conclusion"], run["output"]["title"]) == ("action_required", title)
    assert stub.requests == [] and not gate.ever_approved(head)

    # Closing the draft publishes the head's checks again, from the pull request that is left.
    gate.fake.closed.add(2)
    await gate.event(2, "closed")
    assert gate.conclusions(head) == ("success", "success")
    assert gate.latest(EVALS_CHECK, head)["output"]["title"] == "No prompt, config or dataset changed"


# Verdicts per (head, base) and spend across runs (issue 22): a fork at the same head and base shares the
# evaluation (no block, no call), one against another base is evaluated; `/eval` joins a run under way,
# and a pull request's runs stop at `budget.max_cost_usd_per_pull_request`.

# 10 cases, base and head.
CALLS = 20


async def test_a_fork_at_an_approved_head_and_base_neither_reruns_nor_blocks(
    gate: Gate, repo: GitRepo, stub: StubLLM
) -> None:
    build_pr_repo(repo, ["lead"])
    head = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2)
    await gate.comment(2, "lead", "/approve")
    assert gate.conclusions(head) == ("success", "success")

    # An outsider opens a pull request from a fork at the very same commit, into the same base.
    gate.open(3, "main", fork_of="outsider")
    await gate.event(3)

    assert gate.conclusions(head) == ("success", "success")
    assert gate.latest(APPROVAL_CHECK, head)["output"]["title"] == "Approved by lead"
    assert len(stub.requests) == CALLS
    # Nothing in between held the head: no run of either check on it was ever anything but success.
    assert all(r["conclusion"] == "success" for r in gate.fake.runs_named(APPROVAL_CHECK, head)[1:])


async def test_a_trusted_pull_request_at_an_evaluated_head_and_base_shares_the_run(
    gate: Gate, repo: GitRepo, stub: StubLLM
) -> None:
    build_pr_repo(repo, ["lead"])
    head = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2)
    gate.open(3, "main")
    await gate.event(3)
    assert len(stub.requests) == CALLS
    assert gate.conclusions(head) == ("success", "action_required")

    # One approval of the evaluation serves both pull requests with that head and base.
    await gate.comment(3, "lead", "/approve")
    assert gate.conclusions(head) == ("success", "success")


async def test_an_approval_on_a_pull_request_sharing_the_evaluation_is_not_its_authors_self_approval(
    gate: Gate, repo: GitRepo, stub: StubLLM
) -> None:
    # Codertocat is an approver and the author of #2; self-approval is off.
    build_pr_repo(repo, ["lead", "Codertocat"])
    head = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2)
    # #3, by someone else, at the same head and base: Codertocat may approve it...
    gate.open(3, "main")
    gate.fake.pull_authors[3] = "other"
    await gate.event(3)
    await gate.comment(3, "Codertocat", "/approve")

    # ...but that approval does not make their own #2 approved.
    assert gate.conclusions(head) == ("success", "action_required")
    title = gate.latest(APPROVAL_CHECK, head)["output"]["title"]
    assert title == (
        "#2 → main: Approval by Codertocat does not count: the author cannot approve it (`allow_self_approval` is off)"
    )
    assert len(stub.requests) == CALLS


async def test_a_fork_against_another_base_still_waits_for_its_own_evaluation(
    gate: Gate, repo: GitRepo, stub: StubLLM
) -> None:
    head = sandbox_repo(repo)
    repo.git("branch", "release", "main")
    gate.open(2, "main")
    await gate.event(2)
    await gate.comment(2, "lead", "/approve")
    assert gate.conclusions(head) == ("success", "success")

    gate.open(3, "release", fork_of="outsider")
    await gate.event(3)

    assert gate.conclusions(head) == ("action_required", "action_required")
    approval = gate.latest(APPROVAL_CHECK, head)
    assert approval["output"]["title"] == "Waiting for a maintainer's /eval"
    assert "| #2 → `main` |" in approval["output"]["summary"]
    assert len(stub.requests) == CALLS


async def test_four_evals_of_one_head_make_one_run(gate: Gate, repo: GitRepo, stub: StubLLM) -> None:
    build_pr_repo(repo, ["lead"])
    head = gate.sha("feature")
    gate.open(2, "main")
    # The pull request is opened, then three `/eval` come while its evaluation is queued.
    await gate.event(2, run=False)
    for _ in range(3):
        await gate.comment(2, "lead", "/eval", run=False)

    # Three commands and one evaluation: each `/eval` joined the run rather than queue its own.
    assert await gate.run_worker() == 4
    assert len(stub.requests) == CALLS
    assert gate.latest(EVALS_CHECK, head)["conclusion"] == "success"


async def test_a_pull_requests_runs_stop_at_its_budget_across_runs(
    gate: Gate, repo: GitRepo, stub: StubLLM, redis: ArqRedis
) -> None:
    # 20 calls of 100 + 50 tokens at these prices: $0.01 spent by the first run. Its estimate is $0.021
    # (every answer as long as max_tokens allows, the latency sample's calls too): one run fits under
    # $0.025, a second ($0.01 + $0.021) does not.
    prices = {"openai/stub": {"input_per_1k": 0.0025, "output_per_1k": 0.005}}
    budget = {"max_cost_usd": 5.0, "max_cost_usd_per_pull_request": 0.025, "max_cost_usd_per_day": 100.0}
    build_pr_repo(repo, ["lead"], prices=prices, budget=budget)
    head = gate.sha("feature")
    gate.open(2, "main")
    await gate.event(2)
    first = gate.latest(EVALS_CHECK, head)
    assert first["conclusion"] == "success"
    spent_key = PULL_SPEND_KEY.format(repo=REPO, pr=2)
    assert float(await redis.get(spent_key)) == pytest.approx(0.01)
    assert (
        "Spend across runs before this one: this pull request $0.0000 of $0.0250 "
        "(`budget.max_cost_usd_per_pull_request`)" in first["output"]["summary"]
    )

    # A writer asks again: the answers are in the cache, but the estimate must fit before anything runs.
    await gate.comment(2, "lead", "/eval")
    refused = gate.latest(EVALS_CHECK, head)
    assert (
        refused["output"]["title"]
        == "Not evaluated: over what the budget across runs leaves (per pull request or per day)"
    )
    assert "this pull request has spent $0.0100 of $0.0250" in refused["output"]["summary"]
    assert len(stub.requests) == CALLS
    assert float(await redis.get(spent_key)) == pytest.approx(0.01)
