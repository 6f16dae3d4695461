"""Databases for the tests: a fresh PostgreSQL database (on the server the machine runs) or SQLite file.

Each test gets its own database, `evalbot_test_<random>`, dropped afterwards: parallel test sessions
on one server never share tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

# The maintenance database the test databases are created from (trust auth on the CI machine).
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def admin_url() -> str:
    return os.environ.get("EVALBOT_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; its URL in the plain form deployments use."""
    name = f"evalbot_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url(), autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url().rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url(), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """A `DATABASE_URL` of `kind` ("postgresql" or "sqlite") for one test."""
    if kind == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{directory / 'evalbot-test.db'}"
