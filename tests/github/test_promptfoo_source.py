"""A promptfoo suite read through the GitHub API: `file://` files and globs at the job's commit."""

from __future__ import annotations

import shutil

from bot.github.api.client import installation_client
from bot.github.api.source import GitHubSource
from bot.pipeline.config import Limits, Suite
from bot.pipeline.suites import read_suite
from bot.settings import Settings
from tests.conftest import GitRepo
from tests.github.conftest import APP_ID
from tests.github.fake_github import FakeGitHub
from tests.pipeline.formats.test_promptfoo_parity import FIXTURE


async def test_the_app_reads_a_promptfoo_config_and_its_globbed_files(
    repo: GitRepo, fake_github: FakeGitHub, app_keys: tuple[str, str]
) -> None:
    shutil.copytree(FIXTURE, repo.root / "evals")
    (repo.root / "evals/prompts/short.txt").write_text("Reply in five words: {{question}}\n")
    config = repo.root / "evals/promptfooconfig.yaml"
    text = config.read_text()
    config.write_text(
        text.replace("  - id: file://prompts/answer.txt\n    label: answer\n", "  - file://prompts/*.txt\n")
    )
    head = repo.commit("globbed prompts")
    settings = Settings(APP_ID=APP_ID, PRIVATE_KEY=app_keys[0], GITHUB_API_URL=fake_github.url)
    source = GitHubSource(installation_client(settings, 7), "octo-org", "support")
    suite = Suite(name="support-bot", promptfoo="evals/promptfooconfig.yaml")

    read = await read_suite(source, head, suite, Limits())

    assert read.errors == ()
    assert read.prompt is not None and read.dataset is not None
    labels = sorted({case.category for case in read.dataset.cases})
    assert labels == ["chat", "evals/prompts/answer.txt", "evals/prompts/short.txt"]
    assert "evals/prompts/short.txt" in read.files and "evals/tests/cases.csv" in read.files
    # The glob was listed from the commit's tree, the files read from its contents.
    assert ("GET", f"/repos/octo-org/support/git/trees/{head}") in fake_github.requests
