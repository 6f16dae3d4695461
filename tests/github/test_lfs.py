"""The App reads Git LFS files through GitHub's LFS batch API with the installation token."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from arq import ArqRedis

from bot.errors import FileTooLargeError, InputError
from bot.github.api.client import installation_client
from bot.github.api.source import GitHubSource
from bot.github.constants import EVALS_CHECK
from bot.github.flows.evaluate import evaluate_pull_request
from bot.settings import Settings
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.github.conftest import APP_ID, answers
from tests.github.fake_github import FakeGitHub
from tests.github.fake_lfs import FakeLfs
from tests.stub_llm import StubLLM

ROWS = b'{"id": "1", "question": "What is 2+2?", "expected": "4"}\n'
OWNER, NAME = "octo-org", "hotel-bot"


@pytest.fixture
def fake_lfs(fake_github: FakeGitHub) -> Iterator[FakeLfs]:
    server = FakeLfs().start()
    fake_github.clone_base = server.url
    yield server
    server.stop()


def source(fake_github: FakeGitHub, app_keys: tuple[str, str]) -> GitHubSource:
    settings = Settings(APP_ID=APP_ID, PRIVATE_KEY=app_keys[0], GITHUB_API_URL=fake_github.url)
    return GitHubSource(installation_client(settings, 7), OWNER, NAME)


async def test_an_lfs_dataset_is_read_through_the_batch_api(
    repo: GitRepo, fake_github: FakeGitHub, fake_lfs: FakeLfs, app_keys: tuple[str, str]
) -> None:
    repo.write("evals/qa.jsonl", fake_lfs.store(ROWS))
    head = repo.commit("rows in LFS")

    text = await source(fake_github, app_keys).read_text(head, "evals/qa.jsonl", 10_000)

    assert text == ROWS.decode()
    (batch,) = fake_lfs.batch_requests
    assert batch["operation"] == "download" and batch["transfers"] == ["basic"]
    assert batch["objects"] == [{"oid": next(iter(fake_lfs.objects)), "size": len(ROWS)}]
    # The installation token went to the LFS server as GitHub takes it, and not to the storage host.
    user, _, token = base64.b64decode(fake_lfs.batch_auth[0].removeprefix("Basic ")).decode().partition(":")
    assert user == "x-access-token" and token.startswith("ghs_fake")
    (download,) = fake_lfs.download_headers
    assert download["authorization"].startswith("RemoteAuth ") and token not in str(download)


async def test_the_object_size_is_checked_before_any_lfs_request(
    repo: GitRepo, fake_github: FakeGitHub, fake_lfs: FakeLfs, app_keys: tuple[str, str]
) -> None:
    repo.write("evals/qa.jsonl", fake_lfs.store(ROWS))
    head = repo.commit("rows in LFS")
    with pytest.raises(FileTooLargeError):
        await source(fake_github, app_keys).read_text(head, "evals/qa.jsonl", len(ROWS) - 1)
    assert fake_lfs.batch_requests == [] and fake_lfs.download_headers == []


async def test_a_missing_or_tampered_object_is_an_input_error(
    repo: GitRepo, fake_github: FakeGitHub, fake_lfs: FakeLfs, app_keys: tuple[str, str]
) -> None:
    pointer = fake_lfs.store(ROWS)
    repo.write("evals/qa.jsonl", pointer)
    head = repo.commit("rows in LFS")
    fake_lfs.tamper = True
    with pytest.raises(InputError) as caught:
        await source(fake_github, app_keys).read_text(head, "evals/qa.jsonl", 10_000)
    assert str(caught.value) == (
        "evals/qa.jsonl: stored in Git LFS, and the downloaded object does not match the pointer's SHA-256"
    )
    fake_lfs.objects.clear()
    with pytest.raises(InputError) as caught:
        await source(fake_github, app_keys).read_text(head, "evals/qa.jsonl", 10_000)
    assert str(caught.value) == (
        "evals/qa.jsonl: stored in Git LFS, and GitHub's LFS server has no such object: Object does not exist"
    )


async def test_a_pull_request_whose_dataset_is_in_lfs_is_evaluated_on_its_rows(
    repo: GitRepo, fake_github: FakeGitHub, fake_lfs: FakeLfs, settings: Settings, redis: ArqRedis, stub: StubLLM
) -> None:
    stub.handler = answers(9)
    rows = "".join(json.dumps({"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"}) + "\n" for i in range(10))
    policy = {"thresholds": {"min_cases": 10, "latency_p95_increase_pct": 1000}, "limits": {"max_file_mb": 1}}
    repo.write(
        ".evalbot.yml", {**policy, **suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])}
    )
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", fake_lfs.store(rows.encode()))
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    head = repo.commit("head")
    fake_github.pulls[2] = (base, head)

    args = {"repo": "Codertocat/Hello-World", "installation_id": 1, "pr_number": 2, "head_sha": head}
    await evaluate_pull_request({"settings": settings, "redis": redis}, **args)

    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert "10 cases" in evals["output"]["summary"], evals["output"]["summary"]
    # Ten rows answered by both prompts: the object's rows, not a pointer's three lines.
    assert len(stub.answered) == 20
    assert len(fake_lfs.batch_requests) >= 1
