"""Failed webhook deliveries are sent again: GitHub never redelivers by itself, so the worker's cron asks
it to, through the app's delivery list (`/app/hook/deliveries`) on the fake, which pages and keys
attempts by GUID as GitHub does."""

from __future__ import annotations

from typing import Any

import pytest
import structlog.testing
from arq import ArqRedis
from githubkit.exception import RequestFailed

from bot.github.api.client import app_client
from bot.github.constants import MAX_REDELIVERIES, REDELIVERED_KEY
from bot.github.flows.redeliver import redeliver_failed
from bot.settings import Settings
from tests.github.fake_github import FakeGitHub

DAY = 24 * 3600


async def test_only_deliveries_never_answered_below_500_are_sent_again(
    redis: ArqRedis, settings: Settings, fake_github: FakeGitHub
) -> None:
    record = fake_github.deliveries.record
    record("stale", "pull_request", b'{"n": 5}', 503, age_s=settings.REDELIVERY_LOOKBACK_S + 60)
    record("down", "pull_request", b'{"n": 1}', 503)  # Redis down: asked again
    record("no-answer", "issue_comment", b'{"n": 2}', 0)  # timed out: asked again
    record("recovered", "pull_request", b'{"n": 3}', 503)
    record("recovered", "pull_request", b'{"n": 3}', 202)  # redelivered already, and taken
    record("refused", "pull_request", b'{"n": 4}', 401)  # our own refusal: would be refused again
    for _ in range(1 + MAX_REDELIVERIES):
        record("hopeless", "pull_request", b'{"n": 6}', 500)
    # 150 newer deliveries push the failed ones to the second page of 100.
    for i in range(150):
        record(f"ok-{i}", "check_run", b"{}", 202)
    ctx: dict[str, Any] = {"redis": redis, "settings": settings}

    assert await redeliver_failed(ctx) == 2
    sent = fake_github.deliveries.take_requested()
    assert sorted((d.guid, d.body) for d in sent) == [("down", b'{"n": 1}'), ("no-answer", b'{"n": 2}')]
    pages = [path for method, path in fake_github.requests if path == "/app/hook/deliveries"]
    assert len(pages) == 2

    # The attempt GitHub makes may not be listed yet: the next run does not ask for it twice.
    assert await redeliver_failed(ctx) == 0
    assert fake_github.deliveries.take_requested() == []


@pytest.mark.slow
async def test_github_refusing_the_delivery_list_is_logged_not_raised(
    redis: ArqRedis, settings: Settings, fake_github: FakeGitHub
) -> None:
    fake_github.down_until = float("inf")
    with structlog.testing.capture_logs() as logs:
        assert await redeliver_failed({"redis": redis, "settings": settings}) == 0
    (entry,) = [e for e in logs if e["event"] == "cannot list webhook deliveries"]
    assert entry["log_level"] == "warning" and "502" in entry["error"]


async def test_the_first_run_looks_back_three_days_and_later_runs_stop_at_the_cursor(
    redis: ArqRedis, settings: Settings, fake_github: FakeGitHub
) -> None:
    record = fake_github.deliveries.record
    record("yesterday", "pull_request", b'{"n": 1}', 503, age_s=DAY)  # a worker down overnight
    record("gone", "pull_request", b'{"n": 2}', 503, age_s=3 * DAY + 60)  # GitHub no longer keeps it
    for i in range(250):
        record(f"ok-{i}", "check_run", b"{}", 202)
    ctx: dict[str, Any] = {"redis": redis, "settings": settings}

    assert await redeliver_failed(ctx) == 1
    assert [d.guid for d in fake_github.deliveries.take_requested()] == ["yesterday"]
    assert len(list_requests(fake_github)) == 3  # 251 attempts, 100 a page

    # Its redelivery failed too, and a new delivery failed: the next run reads only the newer page.
    record("yesterday", "pull_request", b'{"n": 1}', 503)
    record("new", "issue_comment", b'{"n": 3}', 0)
    await redis.delete(REDELIVERED_KEY.format(guid="yesterday"))  # a REDELIVERY_EVERY_S later
    assert await redeliver_failed(ctx) == 2
    assert sorted(d.guid for d in fake_github.deliveries.take_requested()) == ["new", "yesterday"]
    assert len(list_requests(fake_github)) == 4

    # Its attempts are counted across runs: past MAX_REDELIVERIES, it is given up.
    for _ in range(MAX_REDELIVERIES - 1):
        record("yesterday", "pull_request", b'{"n": 1}', 503)
    await redis.delete(REDELIVERED_KEY.format(guid="yesterday"))
    assert await redeliver_failed(ctx) == 0
    assert fake_github.deliveries.take_requested() == []

    # A later success clears a failed delivery: it is not asked again.
    record("new", "issue_comment", b'{"n": 3}', 202)
    await redis.delete(REDELIVERED_KEY.format(guid="new"))
    assert await redeliver_failed(ctx) == 0


async def test_the_fake_keeps_deliveries_three_days_as_github_does(fake_github: FakeGitHub, settings: Settings) -> None:
    fake_github.deliveries.record("old", "pull_request", b"{}", 503, age_s=3 * DAY + 60)
    fake_github.deliveries.record("recent", "pull_request", b"{}", 503, age_s=3 * DAY - 60)
    gh = app_client(settings)
    listed = (await gh.arequest("GET", "/app/hook/deliveries")).json()
    assert [a["guid"] for a in listed] == ["recent"]
    assert listed[0]["installation_id"] == 1
    (old,) = [a for a in fake_github.deliveries.attempts if a["guid"] == "old"]
    with pytest.raises(RequestFailed) as refused:
        await gh.arequest("POST", f"/app/hook/deliveries/{old['id']}/attempts")
    assert refused.value.response.status_code == 404


def list_requests(fake_github: FakeGitHub) -> list[str]:
    return [path for _, path in fake_github.requests if path == "/app/hook/deliveries"]
