"""Fixtures of the web pages' tests: the GitHub App's (fake GitHub, Redis, burst worker) and the web app."""

from __future__ import annotations

from typing import Any

from tests.github.conftest import (  # noqa: F401 (fixtures pytest finds by name)
    app_keys,
    fake_github,
    redis,
    run_worker,
    settings,
)
from tests.web.fixtures import SCREENSHOTS, evaluated, web_url  # noqa: F401


def pytest_terminal_summary(terminalreporter: Any) -> None:
    shots = sorted(SCREENSHOTS.glob("*.png")) if SCREENSHOTS.is_dir() else []
    if shots:
        terminalreporter.write_line(f"browser screenshots ({len(shots)}): {SCREENSHOTS}")
