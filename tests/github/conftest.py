"""Fixtures for the GitHub App: app keys, the fake GitHub API, real Redis and a burst arq worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

from bot.github.api import ratelimit
from bot.github.flows.schedule import check_schedules
from bot.github.webhook import create_app
from bot.github.worker.registry import FUNCTIONS
from bot.settings import Settings
from bot.store import Store
from tests.conftest import GitRepo, prompt_file, redis_test_url, suite_config
from tests.github.fake_github import FakeGitHub, generate_app_keys
from tests.stub_llm import Reply, user_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github-webhooks"
SECRET = "webhook-secret"
APP_ID = "4242"


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def signed_headers(body: bytes, event: str, delivery: str | None = None, secret: str = SECRET) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    }


@asynccontextmanager
async def webhook_client(settings: Settings, redis: ArqRedis) -> AsyncIterator[httpx.AsyncClient]:
    """The web app, with its lifespan, behind an in-process httpx client."""
    app = create_app(settings, redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://evalbot") as http,
    ):
        yield http


@pytest.fixture(scope="session")
def app_keys() -> tuple[str, str]:
    return generate_app_keys()


@pytest.fixture
def fake_github(repo: Any, app_keys: tuple[str, str]) -> Iterator[FakeGitHub]:
    # A new GitHub, with full quotas: what the worker process learnt of the last one's does not apply.
    ratelimit.forget_quotas()
    server = FakeGitHub(repo.root, app_keys[1], APP_ID).start()
    yield server
    server.stop()
    ratelimit.forget_quotas()


@pytest.fixture
def settings(
    fake_github: FakeGitHub, app_keys: tuple[str, str], stub: Any, worker_database: str, job_store: Store
) -> Settings:
    # Depends on job_store: jobs that open the database themselves find it migrated.
    return Settings(
        APP_ID=APP_ID,
        PRIVATE_KEY=app_keys[0].replace("\n", "\\n"),  # as a PaaS secret store keeps it
        WEBHOOK_SECRET=SECRET,
        GITHUB_API_URL=fake_github.url,
        REDIS_URL=redis_test_url(),
        EVALBOT_API_BASE=stub.base_url,
        DATABASE_URL=worker_database,
        # Writes a second apart would make every test seconds longer; tests/github/test_throttle.py
        # checks the spacing itself.
        GITHUB_WRITE_SPACING_S=0.01,
    )


@pytest.fixture
async def redis() -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(redis_test_url()))
    await pool.flushdb()
    yield pool
    await pool.aclose()


# The jobs the test worker runs: `evalbot worker`'s own list, wrappers (heartbeats, time caps, request
# metering) included, and the schedule's cron job, which tests run on demand.
TEST_FUNCTIONS = [*FUNCTIONS, check_schedules]


async def run_burst(redis: ArqRedis, settings: Settings, store: Store, functions: Any = None, **options: Any) -> int:
    """Run queued jobs to completion (arq burst mode), as `evalbot worker` would; how many completed."""
    worker = Worker(
        functions=functions or TEST_FUNCTIONS,
        redis_pool=redis,
        allow_abort_jobs=True,
        burst=True,
        poll_delay=0,
        ctx={"settings": settings, "store": store},
        handle_signals=False,
        **options,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    return int(worker.jobs_complete)


@pytest.fixture
def run_worker(redis: ArqRedis, settings: Settings, job_store: Store) -> Any:
    """Run queued jobs to completion, as `evalbot worker` would."""

    async def run() -> int:
        return await run_burst(redis, settings, job_store)

    return run


def answers(head_right: int, base_right: int = 5) -> Callable[[dict[str, Any]], Reply]:
    """Stub answers: the head prompt ("v2") gets cases 0..head_right-1 of q0-q9 right, base ("v1") base_right."""

    def handler(body: dict[str, Any]) -> Reply:
        case = int(user_text(body).rsplit("q", 1)[-1])
        right = case < (head_right if "v2" in body["messages"][0]["content"] else base_right)
        return Reply(text=f"a{case}" if right else "nope", prompt_tokens=100, completion_tokens=50)

    return handler


def build_pr_repo(repo: GitRepo, approvers: list[str], **policy: Any) -> tuple[str, str]:
    """A repository with suite qa (10 cases): prompt v1.0.0 on main, v1.1.0 on branch feature."""
    # Latency of a stub in this process is noise: these tests gate on accuracy. Ten cases are this
    # repository's policy: below the default `min_cases` (20), which would make every verdict "no evidence".
    policy["thresholds"] = {"min_cases": 10, **policy.get("thresholds", {"latency_p95_increase_pct": 1000})}
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}], **policy)
    repo.write(".evalbot.yml", {"approvers": approvers, **config})
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(10)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    return base, repo.commit("head")


def pull_ref(number: int, base: str, head: str) -> dict[str, Any]:
    """A pull request as a check run or suite payload lists it (same repository only)."""
    return {"number": number, "head": {"ref": "feature", "sha": head}, "base": {"ref": "main", "sha": base}}


def check_run_event(
    action: str, run: dict[str, Any], sender: str, pull_requests: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A `check_run` delivery (`rerequested`, `requested_action` of the Re-run evals button) about `run`
    as the fake GitHub keeps it, built from GitHub's example. `pull_requests` stays empty unless given:
    GitHub lists none when the head is in a fork."""
    payload = fixture(f"check_run.{action}.json")
    payload["check_run"].update(
        id=run["id"],
        name=run["name"],
        head_sha=run["head_sha"],
        status=run["status"],
        conclusion=run["conclusion"],
        external_id=run.get("external_id") or "",
        pull_requests=pull_requests or [],
    )
    payload["repository"].update(full_name="Codertocat/Hello-World", name="Hello-World")
    payload["sender"].update(login=sender, type="User")
    if action == "requested_action":
        payload["requested_action"] = {"identifier": "rerun"}
    return payload


def check_suite_event(head_sha: str, sender: str, pull_requests: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A `check_suite.rerequested` delivery for `head_sha` from GitHub's example; `pull_requests` empty
    unless given (a fork's head)."""
    payload = fixture("check_suite.rerequested.json")
    payload["check_suite"].update(head_sha=head_sha, head_branch=None, pull_requests=pull_requests or [])
    payload["sender"].update(login=sender, type="User")
    return payload
