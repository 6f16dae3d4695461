"""Nothing secret is posted: secret settings, provider keys, provider error bodies, URLs in exceptions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from arq import ArqRedis
from githubkit import GitHub

from bot.github.api.client import app_auth, installation_client
from bot.github.api.publish import Publisher, comment_body
from bot.github.api.redact import Redactor
from bot.github.constants import EVALS_CHECK
from bot.github.flows.evaluate import evaluate_pull_request
from bot.settings import Settings
from tests.conftest import GitRepo
from tests.github.conftest import APP_ID, build_pr_repo
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import Reply, StubLLM, user_text

REPO = "Codertocat/Hello-World"
# One sentinel per secret the deployment holds: provider keys as litellm reads them, and settings.
ENV_SECRETS = {
    "OPENAI_API_KEY": "sentinel-openai-3f9a1c",
    "ANTHROPIC_API_KEY": "sentinel-anthropic-77b2",
    "HUGGINGFACE_API_KEY": "sentinel-huggingface-0d4e",
    "HF_TOKEN": "sentinel-hf-token-9c1b",
    "AWS_ACCESS_KEY_ID": "sentinel-aws-id-5a6b",
    "AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret-8e2f",
    "AZURE_API_KEY": "sentinel-azure-1a2b",
    "WATSONX_APIKEY": "sentinel-watsonx-4c4c",
    "GITHUB_CLIENT_SECRET": "sentinel-client-secret-6d6d",
    "DATABASE_PASSWORD": "sentinel-db-password-2e2e",
}
WEBHOOK_SECRET = "sentinel-webhook-secret-5151"
METRICS_TOKEN = "sentinel-metrics-token-6262"
URL_PASSWORD = "sentinel-url-password-7373"
URL_QUERY = "sentinel-url-query-8484"


@pytest.fixture
def secret_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://evalbot:{URL_PASSWORD}@db.internal:5432/evalbot")
    # Retries of the failing calls without their backoff: the test is about text, not timing.
    monkeypatch.setattr("bot.engine.models.RetryPolicy.delay_s", lambda self, attempt, retry_after_s: 0.0)
    return settings.model_copy(update={"WEBHOOK_SECRET": WEBHOOK_SECRET, "METRICS_TOKEN": METRICS_TOKEN})


def sentinels(settings: Settings) -> list[str]:
    assert settings.PRIVATE_KEY
    pem_lines = [line for line in settings.PRIVATE_KEY.splitlines() if len(line) >= 40]
    return [*ENV_SECRETS.values(), WEBHOOK_SECRET, METRICS_TOKEN, URL_PASSWORD, *pem_lines]


def hostile_text(settings: Settings) -> str:
    """What a provider may echo: keys, settings, a URL with credentials and a signed query string (a
    secret held nowhere in the deployment: only the URL's shape gives it away)."""
    return " ".join(sentinels(settings)) + f" see https://admin:{URL_PASSWORD}@internal.example/x?sig={URL_QUERY}"


def everything_posted(fake: FakeGitHub) -> str:
    """Every JSON body the fake GitHub received, and every comment as it stands."""
    return json.dumps([fake.bodies, list(fake.comments.values())], ensure_ascii=False)


def assert_nothing_secret(posted: str, settings: Settings) -> None:
    leaked = [s for s in [*sentinels(settings), URL_QUERY] if s in posted]
    assert leaked == []
    assert "internal.example/admin" not in posted and "admin:" not in posted


@pytest.mark.slow
async def test_a_provider_echoing_secrets_and_failing_with_them_leaks_nothing(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, secret_settings: Settings
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = (base, head)
    echo = hostile_text(secret_settings)

    def provider(body: dict[str, Any]) -> Reply:
        case = int(user_text(body).rsplit("q", 1)[-1])
        if "v2" not in body["messages"][0]["content"] or case >= 4:
            return Reply(text=f"a{case}")
        if case < 2:  # an answer that echoes secrets: a regression shown in the report's table
            return Reply(text=echo)
        # A 500 whose body carries the key, the webhook secret and an internal URL.
        return Reply(
            status=500, error=f"upstream https://internal.example/admin?key={ENV_SECRETS['OPENAI_API_KEY']} {echo}"
        )

    stub.handler = provider
    job = {"repo": REPO, "installation_id": 1, "pr_number": 2, "head_sha": head}
    verdict = await evaluate_pull_request({"settings": secret_settings, "redis": redis}, **job)

    assert verdict == "fail"
    posted = everything_posted(fake_github)
    assert_nothing_secret(posted, secret_settings)
    summary = fake_github.runs_named(EVALS_CHECK, head)[-1]["output"]["summary"]
    # The failure is still told: its status and a fixed description, for each failed case.
    assert summary.count("| head | `c2` | openai/stub: HTTP 500: provider error |") == 1
    assert summary.count("| head | `c3` | openai/stub: HTTP 500: provider error |") == 1
    assert "[redacted]" in summary


async def test_a_crash_posts_the_error_class_not_its_text(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, secret_settings: Settings
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = (base, head)
    # The file list answers 500: the exception's text holds the request URL and its query string.
    fake_github.files_status = 500

    def no_retries(settings: Settings, installation_id: int) -> GitHub[Any]:
        auth = app_auth(settings).as_installation(installation_id)
        return GitHub(auth, base_url=settings.GITHUB_API_URL, auto_retry=False)

    ctx = {"settings": secret_settings, "redis": redis, "github_factory": no_retries}
    job = {"repo": REPO, "installation_id": 1, "pr_number": 2, "head_sha": head}
    assert await evaluate_pull_request(ctx, **job) == "crashed"

    summary = fake_github.runs_named(EVALS_CHECK, head)[-1]["output"]["summary"]
    assert "http" not in summary and "127.0.0.1" not in summary and "per_page" not in summary
    assert "The worker stopped on an unexpected error (`RequestFailed`)" in summary


async def test_every_publisher_call_is_redacted(fake_github: FakeGitHub, secret_settings: Settings) -> None:
    gh = installation_client(secret_settings, 1)
    publisher = Publisher(gh, "Codertocat", "Hello-World", 2, "a" * 40, APP_ID, Redactor.for_settings(secret_settings))
    text = hostile_text(secret_settings)
    check_id = await publisher.ensure_check(EVALS_CHECK)
    await publisher.progress(check_id, text, text)
    await publisher.complete(check_id, "failure", text, text)
    await publisher.reply(text)
    await publisher.upsert_comment(comment_body(text))
    await publisher.upsert_comment(comment_body(text))

    posted = everything_posted(fake_github)
    assert_nothing_secret(posted, secret_settings)
    run = fake_github.check_runs[check_id]
    assert run["output"]["summary"].endswith("[redacted] see https://internal.example/x?[redacted]")
    assert len(fake_github.comments) == 2  # the reply, and one sticky comment edited once
