"""End to end: signed webhook → real Redis → arq worker → fake GitHub API and stub model server."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq import ArqRedis

from bot.github.constants import APPROVAL_CHECK, COMMENT_MARKER, EVALS_CHECK
from bot.github.flows.evaluate import evaluate_pull_request
from bot.settings import Settings
from tests.conftest import GitRepo, prompt_file
from tests.github.conftest import answers, build_pr_repo, fixture, signed_headers, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import Reply, StubLLM

PRICES = {"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}


def build(repo: GitRepo) -> tuple[str, str]:
    return build_pr_repo(repo, ["lead"], prices=PRICES)


def pr_event(action: str, base: str, head: str) -> bytes:
    payload = fixture(f"pull_request.{action}.json")
    payload["pull_request"]["base"].update(sha=base, ref="main")
    payload["pull_request"]["head"].update(sha=head, ref="feature")
    payload["pull_request"]["draft"] = False
    return json.dumps(payload).encode()


@pytest.fixture
def pr(repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM) -> tuple[str, str]:
    """Pull request 2 of the fake GitHub: base and head SHAs, with the stub answering per prompt."""
    base, head = build(repo)
    fake_github.pulls[2] = (base, head)
    stub.handler = answers(9)
    return base, head


def job_args(base: str, head: str) -> dict[str, Any]:
    return {"repo": "Codertocat/Hello-World", "installation_id": 1, "pr_number": 2, "head_sha": head}


@pytest.fixture
async def webhook(redis: ArqRedis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook_client(settings, redis) as http:
        yield http


async def deliver(webhook: httpx.AsyncClient, event: str, body: bytes, delivery: str) -> httpx.Response:
    return await webhook.post("/api/github/webhooks", content=body, headers=signed_headers(body, event, delivery))


@pytest.mark.slow
async def test_pull_request_gets_both_checks_and_one_sticky_comment(
    repo: GitRepo,
    pr: tuple[str, str],
    fake_github: FakeGitHub,
    stub: StubLLM,
    webhook: httpx.AsyncClient,
    run_worker: Any,
) -> None:
    base, head = pr

    response = await deliver(webhook, "pull_request", pr_event("opened", base, head), "d-1")
    assert response.status_code == 202
    assert await run_worker() == 1

    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    (approval,) = fake_github.runs_named(APPROVAL_CHECK, head)
    assert (evals["status"], evals["conclusion"]) == ("completed", "success")
    assert evals["output"]["title"] == "qa: accuracy 50.0% → 90.0% (+40.0 pp)"
    assert "| Accuracy | 50.0% [23.7, 76.3] | 90.0% [59.6, 98.2] | +40.0 pp" in evals["output"]["summary"]
    assert (approval["status"], approval["conclusion"]) == ("completed", "action_required")
    assert "Approvers (from the base branch's `.evalbot.yml`): lead." in approval["output"]["summary"]
    (comment,) = fake_github.comments.values()
    assert comment["body"].startswith(COMMENT_MARKER)
    assert evals["output"]["summary"] in comment["body"]
    assert len(stub.requests) == 20

    # The same delivery again: nothing new.
    again = await deliver(webhook, "pull_request", pr_event("opened", base, head), "d-1")
    assert again.json()["outcome"] == "duplicate delivery"
    assert await run_worker() == 0
    assert len(fake_github.check_runs) == 2

    # A push: new check runs on the new SHA, the same comment edited.
    repo.write("prompts/qa.yaml", prompt_file("1.2.0", system_prompt="v2 again"))
    new_head = repo.commit("push")
    fake_github.pulls[2] = (base, new_head)
    await deliver(webhook, "pull_request", pr_event("synchronize", base, new_head), "d-2")
    assert await run_worker() == 1
    assert len(fake_github.runs_named(EVALS_CHECK, new_head)) == 1
    assert len(fake_github.comments) == 1
    assert next(iter(fake_github.comments.values()))["edits"] == 1


async def test_a_users_comment_with_the_marker_is_not_taken_for_the_sticky_one(
    pr: tuple[str, str], fake_github: FakeGitHub, redis: ArqRedis, settings: Settings
) -> None:
    base, head = pr
    planted = {
        "id": 1,
        "issue": 2,
        "body": f"{COMMENT_MARKER} mine",
        "edits": 0,
        "user": {"login": "x", "type": "User"},
    }
    fake_github.comments[1] = planted
    await evaluate_pull_request({"settings": settings, "redis": redis}, **job_args(base, head))
    assert planted["edits"] == 0 and planted["body"] == f"{COMMENT_MARKER} mine"
    assert len(fake_github.comments) == 2


async def test_no_ai_change_gives_success_at_once_without_model_calls(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, webhook: httpx.AsyncClient, run_worker: Any
) -> None:
    base, _ = build(repo)
    repo.git("checkout", "-q", "main")
    repo.git("checkout", "-q", "-b", "docs")
    repo.write("README.md", "docs")
    head = repo.commit("docs only")
    fake_github.pulls[2] = (base, head)
    await deliver(webhook, "pull_request", pr_event("opened", base, head), "d-3")
    assert await run_worker() == 1
    for name in (EVALS_CHECK, APPROVAL_CHECK):
        (run,) = fake_github.runs_named(name, head)
        assert run["conclusion"] == "success"
    assert fake_github.runs_named(EVALS_CHECK, head)[0]["output"]["title"] == "No prompt, config or dataset changed"
    assert stub.requests == [] and fake_github.comments == {}


@pytest.mark.slow
@pytest.mark.parametrize(
    "failures",
    [
        [502, 502],  # the first check-run look-up and its first retry
        [(403, {"Retry-After": "1"}, "You have exceeded a secondary rate limit. Please wait a few minutes.")],
    ],
    ids=["502", "secondary-rate-limit"],
)
async def test_github_errors_are_retried_and_the_run_completes(
    pr: tuple[str, str], fake_github: FakeGitHub, webhook: httpx.AsyncClient, run_worker: Any, failures: list[Any]
) -> None:
    base, head = pr
    fake_github.fail_next = failures
    await deliver(webhook, "pull_request", pr_event("opened", base, head), "d-4")
    assert await run_worker() == 1
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert evals["conclusion"] == "success"
    assert fake_github.fail_next == []


@pytest.mark.slow
async def test_a_rerun_after_a_killed_worker_reuses_check_runs_and_comment(
    pr: tuple[str, str], fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings
) -> None:
    base, head = pr
    args = job_args(base, head)
    assert await evaluate_pull_request({"settings": settings, "redis": redis, "job_try": 1}, **args) == "pass"
    calls_after_first = len(stub.requests)
    # What a SIGKILL mid-publish leaves: the evals run still in progress. arq runs the job again.
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    evals.update(status="in_progress", conclusion=None)
    assert await evaluate_pull_request({"settings": settings, "redis": redis, "job_try": 2}, **args) == "pass"
    # The answers came from the cache; latency alone was measured again, base and head on all 10 cases.
    assert calls_after_first == 20 and len(stub.requests) == 40
    (rerun,) = fake_github.runs_named(EVALS_CHECK, head)
    assert rerun["id"] == evals["id"] and rerun["conclusion"] == "success"
    assert len(fake_github.comments) == 1


@pytest.mark.slow
async def test_a_completed_run_is_not_reopened_and_other_apps_runs_are_not_ours(
    pr: tuple[str, str], fake_github: FakeGitHub, redis: ArqRedis, settings: Settings
) -> None:
    base, head = pr
    # A workflow job named like our check, by another app, already green.
    fake_github.check_runs[1] = {
        "id": 1, "name": EVALS_CHECK, "head_sha": head, "status": "completed", "conclusion": "success",
        "app": {"id": 15368, "slug": "github-actions"}, "output": None,
    }  # fmt: skip
    await evaluate_pull_request({"settings": settings, "redis": redis}, **job_args(base, head))
    await evaluate_pull_request({"settings": settings, "redis": redis}, **job_args(base, head))
    first, second = fake_github.runs_named(EVALS_CHECK, head)
    assert first["id"] != 1 and second["id"] > first["id"]
    assert fake_github.check_runs[1]["conclusion"] == "success"  # untouched


async def test_progress_is_posted_while_cases_run(
    pr: tuple[str, str],
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, head = pr
    monkeypatch.setattr("bot.github.flows.evaluate.PROGRESS_INTERVAL_S", 0.0)
    slow = stub.handler
    stub.handler = lambda body: Reply(**{**vars(slow(body)), "delay_s": 0.05})
    await evaluate_pull_request({"settings": settings, "redis": redis}, **job_args(base, head))
    updates = [body for method, path, body in fake_github.bodies if method == "PATCH" and path.endswith("/1000")]
    # Queued on creation, then in progress with counts while cases run, completed last.
    assert fake_github.bodies[0][2]["status"] == "queued"
    assert updates[0]["output"]["title"] == "Evaluating"
    progress = [u["output"]["title"] for u in updates[1:-1]]
    assert progress and all(re.fullmatch(r"\d+ / 20 calls, 0 from cache", title) for title in progress)
    assert (updates[-1]["status"], updates[-1]["conclusion"]) == ("completed", "success")


@pytest.mark.slow
async def test_a_crash_still_completes_the_check_run(
    pr: tuple[str, str], fake_github: FakeGitHub, stub: StubLLM, webhook: httpx.AsyncClient, run_worker: Any
) -> None:
    base, head = pr
    # The PR's file list answers 500 until githubkit gives up (1 try + 3 retries).
    fake_github.files_status = 500
    await deliver(webhook, "pull_request", pr_event("opened", base, head), "d-5")
    assert await run_worker() == 1
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["status"], evals["conclusion"]) == ("completed", "failure")
    assert evals["output"]["title"] == "evalbot could not finish the evaluation"
    assert stub.requests == []


async def test_github_down_before_any_check_run_asks_arq_to_retry(
    repo: GitRepo, fake_github: FakeGitHub, redis: ArqRedis, settings: Settings
) -> None:
    from arq import Retry
    from githubkit import GitHub

    from bot.github.api.client import app_auth

    base, head = build(repo)
    fake_github.fail_next = [502]

    def no_retries(settings: Settings, installation_id: int) -> GitHub[Any]:
        auth = app_auth(settings).as_installation(installation_id)
        return GitHub(auth, base_url=settings.GITHUB_API_URL, auto_retry=False)

    args = job_args(base, head)
    ctx = {"settings": settings, "redis": redis, "job_try": 2, "github_factory": no_retries}
    with pytest.raises(Retry) as info:
        await evaluate_pull_request(ctx, **args)
    assert info.value.defer_score == 60_000  # 30 s x try 2, in ms
    assert fake_github.check_runs == {}


async def test_a_broken_config_in_the_pull_request_is_shown_with_file_and_line(
    repo: GitRepo, pr: tuple[str, str], fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings
) -> None:
    base, _ = pr
    (repo.root / ".evalbot.yml").write_text("suites:\n  - name: qa\n    prompt: [unclosed\n")
    head = repo.commit("break the config")
    fake_github.pulls[2] = (base, head)
    assert await evaluate_pull_request({"settings": settings, "redis": redis}, **job_args(base, head)) == "error"
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["conclusion"], evals["output"]["title"]) == ("failure", "Files cannot be read: 1 error")
    assert "- .evalbot.yml:4: YAML syntax error" in evals["output"]["summary"]
    assert stub.requests == []


async def test_github_refusing_before_any_check_run_is_not_retried(
    repo: GitRepo, fake_github: FakeGitHub, redis: ArqRedis, settings: Settings
) -> None:
    base, head = build(repo)
    fake_github.fail_next = [(403, {}, "Resource not accessible by integration")]
    assert await evaluate_pull_request({"settings": settings, "redis": redis}, **job_args(base, head)) == "github-error"


@pytest.mark.slow
async def test_a_job_timeout_closes_the_check_run(
    pr: tuple[str, str], fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings
) -> None:
    import asyncio

    base, head = pr
    stub.handler = lambda body: Reply(text="slow", delay_s=5)
    job = asyncio.create_task(evaluate_pull_request({"settings": settings, "redis": redis}, **job_args(base, head)))
    async with asyncio.timeout(60):  # the first call is sent within seconds, even on a loaded machine
        while not stub.requests:
            await asyncio.sleep(0.05)
    job.cancel()  # what arq's job_timeout does
    with pytest.raises(asyncio.CancelledError):
        await job
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["status"], evals["conclusion"], evals["output"]["title"]) == (
        "completed",
        "timed_out",
        "evalbot timed out",
    )
