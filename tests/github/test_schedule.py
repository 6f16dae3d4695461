"""Nightly re-evaluation of the default branch: due firings, fresh calls, the drift check run and issue."""

from __future__ import annotations

from typing import Any

import pytest
from arq import ArqRedis

from bot.github.constants import DRIFT_CHECK
from bot.github.flows.schedule import due_firing
from bot.store import Store
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import Reply, StubLLM, user_text

REPO = "Codertocat/Hello-World"
DAY_S = 24 * 3600
# 2027-01-15 12:00 UTC: evalbot first saw the repository then; the schedule fires at 03:00 UTC.
SEEN = 1_800_000_000 + 4 * 3600


@pytest.fixture
def worker_database(database_url: str) -> str:
    return database_url  # these tests run on PostgreSQL and on SQLite


class Provider:
    """The stub model behind `openai/stub`: right on the first `right` of q0-q9."""

    def __init__(self, stub: StubLLM, right: int):
        self.right = right
        stub.handler = self.answer

    def answer(self, body: dict[str, Any]) -> Reply:
        case = int(user_text(body).rsplit("q", 1)[-1])
        return Reply(text=f"a{case}" if case < self.right else "nope", prompt_tokens=100, completion_tokens=50)


def build_main(repo: GitRepo, **policy: Any) -> str:
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])
    config["thresholds"] = {"latency_p95_increase_pct": 1000}  # the stub's latency is noise
    repo.write(".evalbot.yml", {"schedule": {"cron": "0 3 * * *"}, **policy, **config})
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(10)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    return repo.commit("main")


class Nightly:
    def __init__(self, redis: ArqRedis, run_worker: Any, store: Store, fake: FakeGitHub, stub: StubLLM):
        self.redis, self.run_worker, self.store, self.fake, self.stub = redis, run_worker, store, fake, stub
        store.note_repository(REPO, 1, at=SEEN)

    async def tick(self, day: int) -> None:
        """The worker's cron on `day` days after evalbot first saw the repository, 04:00 UTC."""
        await self.redis.enqueue_job("check_schedules", now=SEEN + day * DAY_S - 8 * 3600)
        await self.run_worker()

    def outcomes(self) -> list[tuple[str, Any]]:
        return [(e.get("verdict"), e.get("drifted")) for e in self.store.audit_entries(REPO) if e.kind == "verdict"]


@pytest.fixture
def nightly(redis: ArqRedis, run_worker: Any, job_store: Store, fake_github: FakeGitHub, stub: StubLLM) -> Nightly:
    return Nightly(redis, run_worker, job_store, fake_github, stub)


def test_a_firing_before_evalbot_saw_the_repository_or_already_run_is_not_due() -> None:
    now = SEEN + DAY_S - 8 * 3600  # the next day, 04:00 UTC
    fire = due_firing("0 3 * * *", now, SEEN, None)
    assert fire == SEEN + DAY_S - 9 * 3600  # that day's 03:00 UTC
    assert due_firing("0 3 * * *", SEEN + 3600, SEEN, None) is None  # 03:00 that day came before SEEN
    assert due_firing("0 3 * * *", now, SEEN, fire) is None


@pytest.mark.slow
async def test_a_run_with_no_change_opens_no_issue(nightly: Nightly, repo: GitRepo, stub: StubLLM) -> None:
    build_main(repo)
    Provider(stub, right=9)
    await nightly.tick(1)
    assert nightly.outcomes() == [("baseline", {})]
    assert len(stub.requests) == 10
    # Recorded with the repository's id: its page and the suite chart show it by that.
    (point,) = nightly.store.suite_history(REPO, "qa", "main", repository_id=nightly.fake.oauth.repository_id(REPO))
    assert point.trigger == "scheduled" and point.public_id

    await nightly.tick(1)  # the same firing again: nothing to do
    assert len(stub.requests) == 10

    await nightly.tick(2)
    # The answers are in the cache since last night, yet the model under test is called again.
    assert len(stub.requests) == 20
    assert nightly.outcomes() == [("baseline", {}), ("stable", {})]
    assert nightly.fake.issues == {} and nightly.fake.runs_named(DRIFT_CHECK) == []


@pytest.mark.slow
async def test_a_provider_changing_its_answers_opens_one_drift_issue_and_a_second_drift_updates_it(
    nightly: Nightly, repo: GitRepo, stub: StubLLM, fake_github: FakeGitHub
) -> None:
    main_sha = build_main(repo)
    provider = Provider(stub, right=9)
    # Issues with the same title that evalbot did not open: never taken for its own.
    for number, user, app in ((50, "User", None), (51, "Bot", {"id": 999, "slug": "other-app"})):
        fake_github.issues[number] = {
            "number": number,
            "title": "evalbot: drift on qa",
            "body": "mine",
            "state": "open",
        }
        fake_github.issues[number] |= {"user": {"type": user}, "performed_via_github_app": app, "edits": 0}
    await nightly.tick(1)

    provider.right = 2  # the provider swapped the model behind the same name: 7 cases broke
    await nightly.tick(2)
    assert nightly.outcomes() == [("baseline", {}), ("drift", {"qa": ["accuracy"]})]
    (check,) = fake_github.runs_named(DRIFT_CHECK, main_sha)
    assert (check["conclusion"], check["output"]["title"]) == ("failure", "Drift on qa")
    ours = [i for i in fake_github.issues.values() if i["number"] not in (50, 51)]
    (issue,) = ours
    assert (issue["title"], issue["edits"]) == ("evalbot: drift on qa", 0)
    body = issue["body"]
    assert "## evalbot: ⚠️ drift on `main`" in body
    assert "| Accuracy | 90.0% [59.6, 98.2] | 20.0% [5.7, 51.0] | -70.0 pp" in body
    assert "| ⚠️ yes |" in body and "10 paired cases; 7 passed before and fail now" in body
    assert "Same prompt, model and exam as the last scheduled run: the provider's answers changed." in body

    provider.right = 9  # and back: the accuracy moves again, significantly
    await nightly.tick(3)
    assert nightly.outcomes()[-1] == ("drift", {"qa": ["accuracy"]})
    (issue,) = [i for i in fake_github.issues.values() if i["number"] not in (50, 51)]  # updated, not a second
    assert [(fake_github.issues[n]["body"], fake_github.issues[n]["edits"]) for n in (50, 51)] == [("mine", 0)] * 2
    assert issue["edits"] == 1 and "| Accuracy | 20.0% [5.7, 51.0] | 90.0% [59.6, 98.2] | +70.0 pp" in issue["body"]
    assert len(fake_github.runs_named(DRIFT_CHECK, main_sha)) == 2


async def test_the_budget_of_the_default_branch_applies(nightly: Nightly, repo: GitRepo, stub: StubLLM) -> None:
    prices = {"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}
    main_sha = build_main(repo, budget={"max_cost_usd": 0.0001}, prices=prices)
    Provider(stub, right=9)
    await nightly.tick(1)
    assert stub.requests == []
    assert nightly.outcomes() == [("not-run", None)]
    (check,) = nightly.fake.runs_named(DRIFT_CHECK, main_sha)
    assert (check["conclusion"], check["output"]["title"]) == ("neutral", "The scheduled re-evaluation did not run")
    assert "is above the budget of $0.0001 (`budget.max_cost_usd` of `main`'s" in check["output"]["summary"]
