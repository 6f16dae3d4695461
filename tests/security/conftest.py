"""The GitHub App fixtures (fake GitHub API, app keys, real Redis, burst worker) for attacks that go through
the worker."""

from tests.github.conftest import app_keys, fake_github, redis, run_worker, settings

__all__ = ["app_keys", "fake_github", "redis", "run_worker", "settings"]
