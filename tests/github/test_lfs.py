"""The App reads Git LFS files through GitHub's LFS batch API with the installation token."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from bot.errors import FileTooLargeError, InputError
from bot.github.client import installation_client
from bot.github.source import GitHubSource
from bot.settings import Settings
from tests.conftest import GitRepo
from tests.github.conftest import APP_ID
from tests.github.fake_github import FakeGitHub
from tests.github.fake_lfs import FakeLfs

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
