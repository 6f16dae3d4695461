"""The GitHub App's fixtures (fake GitHub, Redis, burst worker), for history the worker writes; here the
worker's database is the real PostgreSQL server and SQLite in turn."""

import pytest

from tests.github.conftest import (  # noqa: F401 (fixtures pytest finds by name)
    app_keys,
    fake_github,
    redis,
    run_worker,
    settings,
)
from tests.github.test_approval import pr  # noqa: F401


@pytest.fixture
def worker_database(database_url: str) -> str:
    return database_url
