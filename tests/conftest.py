"""Shared fixtures: a stub OpenAI-compatible server, git repositories built per test, a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bot.store import Store, migrate, open_store
from bot.store import database_url as sqlalchemy_url
from tests.databases import database
from tests.redis_server import PrivateRedis, answers
from tests.stub_llm import StubLLM

# Every test that needs Redis uses this database, flushed by the test. Set EVALBOT_TEST_REDIS_URL to
# keep parallel test sessions apart (another database or server); pytest-xdist's workers (`-n 2`) each
# take the database below the one before (15, 14, ...).
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"
_private_redis: PrivateRedis | None = None


def _xdist_worker() -> int:
    """This process's pytest-xdist worker number (gw0 -> 0); 0 when the tests run in one process."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def pytest_configure(config: pytest.Config) -> None:
    # Without a Redis the GitHub App tests cannot run, and a skip would hide that: start one instead.
    global _private_redis
    url = os.environ.get("EVALBOT_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    parts = urlsplit(url)
    url = urlunsplit(parts._replace(path=f"/{int(parts.path.strip('/') or 0) - _xdist_worker()}"))
    if not answers(url):
        _private_redis = PrivateRedis()
        url = _private_redis.url(15)
    os.environ["EVALBOT_TEST_REDIS_URL"] = url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _private_redis is not None:
        _private_redis.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # In CI a skipped test is a missing service or package, not a pass.
    skipped = session.config.pluginmanager.get_plugin("terminalreporter")
    count = len(skipped.stats.get("skipped", [])) if skipped is not None else 0
    if os.environ.get("CI") and count and exitstatus == 0:
        print(f"\nCI: {count} test(s) skipped; in CI every test must run")
        session.exitstatus = 1


def redis_test_url() -> str:
    """The Redis the tests use (set up by pytest_configure)."""
    return os.environ.get("EVALBOT_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)


@pytest.fixture
def stub() -> Iterator[StubLLM]:
    server = StubLLM().start()
    yield server
    server.stop()


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database per test, on the real PostgreSQL server and on SQLite (the local default)."""
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """An empty SQLite database, for tests about something other than the database."""
    with database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def worker_database(sqlite_url: str) -> str:
    """The worker's DATABASE_URL: SQLite unless a test module asks for both (`database_url`)."""
    return sqlite_url


@pytest.fixture
def job_store(worker_database: str) -> Iterator[Store]:
    """The worker's store, migrated as `evalbot worker` does at start."""
    store = open_store(sqlalchemy_url(worker_database, Path("unused")))
    migrate(store)
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may touch the developer's cache or a real provider.
    monkeypatch.setenv("EVALBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens: disk cache unless a test says so


class _NoAliasDumper(yaml.SafeDumper):
    # evalbot refuses YAML aliases; safe_dump writes one wherever an object appears twice.
    def ignore_aliases(self, data: Any) -> bool:
        return True


class GitRepo:
    """A throwaway git repository: write files, commit, and tag revisions."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "test@example.com")
        self.git("config", "user.name", "test")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), *args], check=True, capture_output=True, text=True).stdout

    def write(self, path: str, content: str | dict[str, Any] | list[Any]) -> None:
        file = self.root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            file.write_text(content)
        elif path.endswith(".jsonl"):
            assert isinstance(content, list)
            file.write_text("".join(json.dumps(row) + "\n" for row in content))
        else:
            file.write_text(yaml.dump(content, Dumper=_NoAliasDumper, sort_keys=False))

    def commit(self, message: str, tag: str | None = None) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        if tag:
            self.git("tag", tag)
        return self.git("rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


def prompt_file(version: str, model: str = "openai/stub", **extra: Any) -> dict[str, Any]:
    return {
        "version": version,
        "model": model,
        "system_prompt": "You are a helpful agent.",
        "user_prompt_template": "Question: {question}",
        "temperature": 0,
        "max_tokens": 50,
        **extra,
    }


# The stub model's price: a model with no known price is refused by the budget check.
STUB_PRICES = {"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}


def suite_config(name: str, prompt: str, dataset: str, graders: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    """An `.evalbot.yml` with one suite, plus any top-level keys (thresholds, ...; `prices` default to STUB_PRICES)."""
    config.setdefault("prices", STUB_PRICES)
    return {**config, "suites": [{"name": name, "prompt": prompt, "dataset": dataset, "graders": graders}]}
