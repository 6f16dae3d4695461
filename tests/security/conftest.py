"""The GitHub App fixtures (fake GitHub, settings, Redis, burst worker) for the security tests."""

from tests.github.conftest import app_keys, fake_github, redis, run_worker, settings

__all__ = ["app_keys", "fake_github", "redis", "run_worker", "settings"]
