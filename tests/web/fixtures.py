"""The web app served over HTTP beside the fake GitHub (with its OAuth endpoints), and a pull request
evaluated for real: a signed webhook, the arq worker, the stub model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq import ArqRedis
from sqlalchemy import insert, update

from bot.github.constants import EVALS_CHECK
from bot.github.webhook import create_app
from bot.settings import Settings
from bot.store import Store
from bot.store.tables import CaseOutcome, Run, SuiteResult
from tests.conftest import GitRepo
from tests.github.conftest import build_pr_repo, fixture, signed_headers, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.fake_oauth import CLIENT_ID, CLIENT_SECRET
from tests.servers import ThreadedServer
from tests.stub_llm import Reply, StubLLM, user_text

REPO = "Codertocat/Hello-World"  # the repository of the webhook fixtures
# Screenshots of every page a browser test opens (gitignored); the path is printed at the end of the run.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-screenshots"


def regressing_answers(body: dict[str, Any]) -> Reply:
    """The base prompt ("v1") answers c0-c4 right, the head ("v2") c2-c9: c0 and c1 regress, c5-c9 are fixed.
    Wrong answers say which side gave them, so a page shows both."""
    case = int(user_text(body).rsplit("q", 1)[-1])
    head = "v2" in body["messages"][0]["content"]
    right = case >= 2 if head else case < 5
    text = f"a{case}" if right else f"{'head' if head else 'base'} guess {case}"
    return Reply(text=text, prompt_tokens=100, completion_tokens=50)


@pytest.fixture
def web_url(settings: Settings, fake_github: FakeGitHub, redis: ArqRedis) -> Iterator[str]:
    """evalbot's web app on 127.0.0.1 (PUBLIC_URL, so check runs link to it), signing in at the fake GitHub."""
    settings.GITHUB_CLIENT_ID, settings.GITHUB_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.GITHUB_WEB_URL = fake_github.url
    settings.SESSION_SECRET = "test-session-secret-test-session-secret"
    app = create_app(settings, redis=redis)
    server = ThreadedServer(app)
    server.start()
    settings.PUBLIC_URL = f"http://127.0.0.1:{server.port}"
    fake_github.oauth.callback_urls = [f"{settings.PUBLIC_URL}/login/callback"]
    yield settings.PUBLIC_URL
    server.stop()
    app.state.web.close()


@pytest.fixture
def evaluated(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    settings: Settings,
    redis: ArqRedis,
    run_worker: Any,
    web_url: str,
) -> Callable[[], Any]:
    """Pull request 2 opened and evaluated through the worker; returns its `evalbot/evals` check run."""

    async def run() -> dict[str, Any]:
        base, head = build_pr_repo(
            repo, ["lead"], prices={"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}
        )
        fake_github.pulls[2] = (base, head)
        stub.handler = regressing_answers
        payload = fixture("pull_request.opened.json")
        payload["pull_request"]["base"].update(sha=base, ref="main")
        payload["pull_request"]["head"].update(sha=head, ref="feature")
        payload["pull_request"]["draft"] = False
        body = json.dumps(payload).encode()
        async with webhook_client(settings, redis) as http:
            response = await http.post(
                "/api/github/webhooks", content=body, headers=signed_headers(body, "pull_request")
            )
        assert response.status_code == 202
        assert await run_worker() == 1
        (evals,) = fake_github.runs_named(EVALS_CHECK, head)
        return evals

    return run


def seed_run(
    store: Store,
    repository: str,
    repository_id: int,
    cases: int,
    answer_chars: int = 100,
    texts: tuple[str, str] = ("", ""),
) -> str:
    """A finished run of one suite "qa" with `cases` cases written straight to the store (no model calls);
    case i passes on base when i % 3 != 0 and on head when i % 2 == 0, every answer `answer_chars` long
    (base answers start with `texts[0]`, head's with `texts[1]`). Its page id."""
    run_id = store.start_run(
        repository=repository,
        trigger="pull_request",
        head_sha="h" * 40,
        started_at=1.8e9,
        pr=2,
        repository_id=repository_id,
    )
    common = {"run_id": run_id, "suite": "qa", "sha": "h" * 40, "branch": "main", "prompt_version": "v"}
    common |= {"definition_hash": "0" * 64, "verdict": "fail", "n_cases": cases, "n_calls": cases, "n_errors": 0}
    with store.engine.begin() as connection:
        connection.execute(
            insert(SuiteResult),
            [{**common, "variant": v, "model": "openai/stub", "details": {}} for v in ("base", "head")],
        )
        rows = []
        for i in range(cases):
            for variant, passed, text in (("base", i % 3 != 0, texts[0]), ("head", i % 2 == 0, texts[1])):
                output = (text + f" {variant} answer {i} ").ljust(answer_chars, "x")
                rows.append(
                    {
                        "run_id": run_id,
                        "suite": "qa",
                        "variant": variant,
                        "case_id": f"c{i}",
                        "category": "even" if i % 2 == 0 else "odd",
                        "sample": 0,
                        "passed": passed,
                        "hallucinated": None,
                        "latency_s": 0.5,
                        "cost_usd": 0.0001,
                        "cached": False,
                        "error": None,
                        "output": output,
                        "grades": [{"grader": "equals", "kind": "accuracy", "passed": passed, "reason": "r"}],
                    }
                )
        connection.execute(insert(CaseOutcome), rows)
        connection.execute(update(Run).where(Run.id == run_id).values(verdict="fail"))
    public_id = store.public_id(run_id)
    assert public_id is not None
    return public_id
