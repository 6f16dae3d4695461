"""The feedback loop: `POST /api/feedback` (token, rate limit, validation), the app's pull request of
confirmed feedback on `feedback.merge`'s schedule, and that pull request's evaluation by the gate."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq import ArqRedis
from sqlalchemy import text

from bot.github.constants import EVALS_CHECK
from bot.github.flows.feedback import check_feedback_merges, merge_feedback
from bot.settings import Settings
from bot.store import Store
from bot.store.feedback import add_feedback, is_feedback_pull, mark_proposed, mint_token, pending_feedback
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.github.conftest import fixture, run_burst, signed_headers, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import Reply, StubLLM, user_text

REPO = "Codertocat/Hello-World"
# 2027-01-15 08:00 UTC, a Friday: the token was minted then; `feedback.merge` fires Mondays 04:00 UTC.
MINTED = 1_800_000_000
MONDAY_AFTER = MINTED + 3 * 24 * 3600 + 2 * 3600  # Monday 2027-01-18 10:00 UTC: that day's 04:00 is due
WEEKLY = {"merge": {"cron": "0 4 * * 1"}}
SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string", "pattern": "^q[0-9]+$"}, "expected": {"type": "string"}},
    "required": ["question", "expected"],
}


def build_main(repo: GitRepo, **policy: Any) -> str:
    """Suite qa on main: ten cases q0-q9 (answer a<n>), a row schema, and `.evalbot.yml`'s `policy`."""
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}], **policy)
    config["suites"][0]["schema"] = "evals/qa.schema.json"
    config["thresholds"] = {"min_cases": 10, "latency_p95_increase_pct": 1000}  # the stub's latency is noise
    repo.write(".evalbot.yml", config)
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(10)])
    repo.write("evals/qa.schema.json", json.dumps(SCHEMA))
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    return repo.commit("main")


def right_answers(body: dict[str, Any]) -> Reply:
    case = int(user_text(body).rsplit("q", 1)[-1])
    return Reply(text=f"a{case}", prompt_tokens=100, completion_tokens=50)


@pytest.fixture
def token(job_store: Store) -> str:
    job_store.note_repository(REPO, 1)  # a job ran there: the installation is known
    return mint_token(job_store, REPO, at=MINTED)


@pytest.fixture
async def web(redis: ArqRedis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook_client(settings, redis) as http:
        yield http


async def post(web: httpx.AsyncClient, token: str, **body: Any) -> httpx.Response:
    return await web.post("/api/feedback", json=body, headers={"Authorization": f"Bearer {token}"})


def case(n: int, correct: bool = True, corrected: str | None = None) -> dict[str, Any]:
    output = f"a{n}" if correct else "nope"
    return {
        "suite": "qa",
        "inputs": {"question": f"q{n}"},
        "output": output,
        "correct": correct,
        "corrected": corrected,
    }


async def test_a_token_is_kept_hashed_and_a_wrong_or_missing_one_is_401(
    repo: GitRepo, web: httpx.AsyncClient, token: str, job_store: Store
) -> None:
    build_main(repo, feedback=WEEKLY)
    with job_store.engine.connect() as connection:
        (stored,) = connection.execute(text("SELECT repository, token_hash FROM feedback_tokens")).all()
    assert stored == (REPO, hashlib.sha256(token.encode()).hexdigest())
    assert (await post(web, token, **case(10))).status_code == 201

    for header in ({"Authorization": f"Bearer {token}x"}, {"Authorization": token}, {}):
        answer = await web.post("/api/feedback", json=case(11), headers=header)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer <feedback token> required" in answer.json()["error"]
    # A rotated token replaces the old one.
    rotated = mint_token(job_store, REPO)
    assert (await post(web, token, **case(12))).status_code == 401
    assert (await post(web, rotated, **case(12))).status_code == 201
    assert [f.inputs for f in pending_feedback(job_store, REPO)] == [{"question": "q10"}, {"question": "q12"}]


async def test_a_token_is_rate_limited_per_minute(
    repo: GitRepo, redis: ArqRedis, settings: Settings, token: str, job_store: Store
) -> None:
    build_main(repo, feedback=WEEKLY)
    async with webhook_client(settings.model_copy(update={"FEEDBACK_RATE_PER_MINUTE": 2}), redis) as web:
        assert [(await post(web, token, **case(n))).status_code for n in (10, 11)] == [201, 201]
        refused = await post(web, token, **case(12))
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"] == "rate limited: at most 2 feedback records a minute per token"
    assert len(pending_feedback(job_store, REPO)) == 2


async def test_invalid_feedback_is_refused_with_the_reason(
    repo: GitRepo, web: httpx.AsyncClient, token: str, job_store: Store
) -> None:
    build_main(repo, feedback=WEEKLY)
    missing = await post(web, token, suite="qa", inputs={"question": "q1"}, correct=True, extra=1)
    assert missing.status_code == 422
    assert missing.json() == {
        "error": "invalid feedback",
        "problems": ["extra: Extra inputs are not permitted", "output: Field required"],
    }
    unknown = await post(web, token, **{**case(10), "suite": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "suite: the default branch's .evalbot.yml has no suite named 'nope'"
    # The suite's row schema, on the row as it would be written.
    broken = await post(web, token, **{**case(10), "inputs": {"question": "what?"}})
    assert broken.status_code == 422
    assert broken.json() == {
        "error": "the feedback does not fit suite 'qa'",
        "problems": ["question: 'what?' does not match '^q[0-9]+$'"],
    }
    clash = await post(web, token, **{**case(10), "inputs": {"question": "q10", "expected": "a10"}})
    assert clash.json()["problems"] == ["inputs.expected: evalbot writes this field of the row itself"]
    assert pending_feedback(job_store, REPO, confirmed_only=False) == []


async def test_feedback_is_refused_where_the_default_branch_has_no_feedback_key(
    repo: GitRepo, web: httpx.AsyncClient, token: str
) -> None:
    build_main(repo)
    answer = await post(web, token, **case(10))
    assert answer.status_code == 403
    assert answer.json()["error"] == "feedback is not enabled: the default branch's .evalbot.yml has no `feedback:`"


@pytest.mark.slow
async def test_three_feedback_records_become_one_app_pull_request_that_the_gate_evaluates(
    repo: GitRepo,
    web: httpx.AsyncClient,
    token: str,
    job_store: Store,
    redis: ArqRedis,
    settings: Settings,
    fake_github: FakeGitHub,
    stub: StubLLM,
    run_worker: Any,
) -> None:
    main = build_main(repo, feedback=WEEKLY)
    fake_github.installation_permissions["contents"] = "write"  # a branch and a commit: see docs/governance.md
    stub.handler = right_answers
    posted = [case(10), case(11, correct=False, corrected="a11"), case(12)]
    answers = [await post(web, token, **body) for body in posted]
    assert [(a.status_code, a.json()["confirmed"]) for a in answers] == [(201, True)] * 3
    # Marked wrong with no right answer: kept, but nothing to grade against, so never proposed.
    assert (await post(web, token, **case(13, correct=False))).json()["confirmed"] is False
    ids = [a.json()["id"] for a in answers]

    ctx = {"settings": settings, "store": job_store, "redis": redis}
    assert await check_feedback_merges(ctx, now=MINTED + 3600) == []  # no Monday 04:00 since the token
    assert await check_feedback_merges(ctx, now=MONDAY_AFTER) == [REPO]
    assert await check_feedback_merges(ctx, now=MONDAY_AFTER + 60) == []  # that firing is taken
    assert await run_worker() == 1

    (number,) = fake_github.pull_bodies
    base, head = fake_github.pulls[number]
    assert base == main and fake_github.pull_refs[number] == ("main", f"evalbot/feedback-{ids[0]}-{ids[2]}")
    assert repo.git("rev-list", "--count", f"{main}..{head}").strip() == "1"  # one commit
    assert repo.git("diff", "--name-only", main, head).split() == ["evals/qa.jsonl"]
    rows = [json.loads(line) for line in repo.git("show", f"{head}:evals/qa.jsonl").splitlines()]
    assert rows[10:] == [
        {"id": f"feedback-{i}", "question": f"q{n}", "expected": f"a{n}", "source": f"feedback:{i}", "feedback_id": i}
        for i, n in zip(ids, (10, 11, 12), strict=True)
    ]
    assert "| `qa` | `evals/qa.jsonl` | 3 |" in fake_github.pull_bodies[number]["body"]
    assert [f.inputs for f in pending_feedback(job_store, REPO, confirmed_only=False)] == [{"question": "q13"}]
    assert pending_feedback(job_store, REPO) == []

    # GitHub delivers the pull request the app opened; the gate evaluates it, its author being the app.
    payload = fixture("pull_request.opened.json")
    payload["number"] = payload["pull_request"]["number"] = number
    payload["pull_request"].update(user={"login": "evalbot[bot]", "type": "Bot"}, draft=False)
    payload["pull_request"]["base"].update(sha=main, ref="main")
    payload["pull_request"]["head"].update(sha=head, ref=fake_github.pull_refs[number][1])
    body = json.dumps(payload).encode()
    assert (
        await web.post("/api/github/webhooks", content=body, headers=signed_headers(body, "pull_request"))
    ).status_code == 202
    assert await run_worker() == 1
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert evals["status"] == "completed" and evals["conclusion"] == "success"
    asked = {user_text(request) for request in stub.requests}
    assert {"Question: q10", "Question: q11", "Question: q12"} <= asked

    # Next Monday: nothing new is confirmed, no second pull request.
    assert await check_feedback_merges(ctx, now=MONDAY_AFTER + 7 * 24 * 3600) == [REPO]
    await run_worker()
    assert list(fake_github.pull_bodies) == [number]


@pytest.mark.slow
async def test_the_drift_issue_says_when_accuracy_drops_on_the_rows_merged_from_feedback(
    repo: GitRepo, job_store: Store, redis: ArqRedis, run_worker: Any, fake_github: FakeGitHub, stub: StubLLM
) -> None:
    ids = [add_feedback(job_store, REPO, "qa", {"question": f"q{n}"}, f"a{n}", True, None) for n in (10, 11, 12)]
    mark_proposed(job_store, ids, 7, "0" * 40)
    config = suite_config(
        "qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}], schedule={"cron": "0 3 * * *"}
    )
    config["thresholds"] = {"latency_p95_increase_pct": 1000}
    repo.write(".evalbot.yml", config)
    rows = [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(10)]
    merged = [
        {"id": f"feedback-{i}", "question": f"q{n}", "expected": f"a{n}"}
        for i, n in zip(ids, (10, 11, 12), strict=True)
    ]
    repo.write("evals/qa.jsonl", rows + merged)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    repo.commit("main")
    seen = MINTED + 4 * 3600  # 12:00 UTC; the nightly run fires at 03:00 UTC
    job_store.note_repository(REPO, 1, at=seen)
    wrong: set[int] = set()

    def answer(body: dict[str, Any]) -> Reply:
        n = int(user_text(body).rsplit("q", 1)[-1])
        return Reply(text="nope" if n in wrong else f"a{n}", prompt_tokens=100, completion_tokens=50)

    stub.handler = answer
    for night, broken in ((1, set()), (2, {10, 11, 12})):
        wrong |= broken
        await redis.enqueue_job("check_schedules", now=seen + night * 24 * 3600 - 8 * 3600)
        await run_worker()
    (issue,) = fake_github.issues.values()
    assert issue["title"] == "evalbot: drift on qa"
    assert (
        "⚠️ Accuracy on the 3 cases merged from production feedback dropped: 100.0% → 0.0% (-100.0 pp; more than "
        "`thresholds.accuracy_drop_pp`)."
    ) in issue["body"]


async def test_without_contents_write_no_pull_request_is_opened_and_the_feedback_stays_pending(
    repo: GitRepo, token: str, job_store: Store, redis: ArqRedis, settings: Settings, fake_github: FakeGitHub
) -> None:
    build_main(repo, feedback=WEEKLY)
    add_feedback(job_store, REPO, "qa", {"question": "q10"}, "a10", True, None)
    ctx = {"settings": settings, "store": job_store, "redis": redis}
    assert await check_feedback_merges(ctx, now=MONDAY_AFTER) == [REPO]
    await run_burst(redis, settings, job_store)
    assert ("POST", f"/repos/{REPO}/git/blobs") in fake_github.requests  # refused: Contents is read-only
    assert fake_github.pull_bodies == {}
    assert [f.inputs for f in pending_feedback(job_store, REPO)] == [{"question": "q10"}]


async def test_a_merge_stopped_before_marking_its_rows_reuses_its_branch_and_pull_request(
    repo: GitRepo, token: str, job_store: Store, redis: ArqRedis, settings: Settings, fake_github: FakeGitHub
) -> None:
    main = build_main(repo, feedback=WEEKLY)
    fake_github.installation_permissions["contents"] = "write"
    for n in (10, 11):
        add_feedback(job_store, REPO, "qa", {"question": f"q{n}"}, f"a{n}", True, None)
    ctx = {"settings": settings, "store": job_store, "redis": redis}
    opened = await merge_feedback(ctx, REPO, 1)
    (number,) = fake_github.pull_bodies
    assert opened == f"opened #{number}"
    with job_store.engine.begin() as connection:  # as if the job had stopped before marking the rows
        connection.execute(text("UPDATE feedback SET pull_request = NULL, merge_sha = NULL, merged_at = NULL"))

    assert await merge_feedback(ctx, REPO, 1) == f"opened #{number}"
    assert list(fake_github.pull_bodies) == [number]  # no second pull request
    head = fake_github.pulls[number][1]
    assert repo.git("rev-list", "--count", f"{main}..{head}").strip() == "1"  # the branch moved, not stacked
    assert len(repo.git("show", f"{head}:evals/qa.jsonl").splitlines()) == 12
    assert is_feedback_pull(job_store, REPO, number, head) and pending_feedback(job_store, REPO) == []
    assert await merge_feedback(ctx, REPO, 1) == "nothing"
