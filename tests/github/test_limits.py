"""Limits GitHub enforces as it enforces them: check-run output in bytes of UTF-8, bodies in characters;
and the fake GitHub refusing what GitHub refuses (statuses and conclusions only GitHub sets, legacy
collaborator permissions, bad credentials)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from githubkit import GitHub
from githubkit.exception import RequestFailed

from bot.github.api.client import installation_client
from bot.github.api.permissions import has_write_access
from bot.github.api.publish import Publisher, annotation, comment_body
from bot.github.constants import EVALS_CHECK
from bot.settings import Settings
from tests.github.conftest import APP_ID
from tests.github.fake_github import FakeGitHub

RUN_PAGE = "https://evalbot.example/runs/r-1"
# What reports carry: 3 bytes each in UTF-8 ("✅" and "→" 3, "ф" 2, "⚠️" 6), one character each but "⚠️".
WIDE = "✅ ⚠️ → — проверка 検証 "


def wide_text(chars: int) -> str:
    return (WIDE * (chars // len(WIDE) + 1))[:chars]


async def refused(gh: GitHub[Any], method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(RequestFailed) as failed:
        await gh.arequest(method, path, json=payload)
    assert failed.value.response.status_code == 422
    return dict(failed.value.response.json())


async def test_the_fake_counts_check_run_output_in_bytes_as_github_does(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    gh = installation_client(settings, 1)
    run = {"name": "x", "head_sha": "a" * 40}
    fits = "é" * 32_767 + "a"  # 32,768 characters, 65,535 bytes
    created = await gh.arequest("POST", "/repos/o/r/check-runs", json=run | {"output": {"title": "t", "summary": fits}})
    run_id = created.json()["id"]

    over = "é" * 32_768  # 32,768 characters, 65,536 bytes
    answer = await refused(gh, "POST", "/repos/o/r/check-runs", run | {"output": {"title": "t", "summary": over}})
    assert answer["message"] == "Validation Failed"
    message = "summary exceeds a maximum bytesize of 65535"
    assert answer["errors"] == [{"resource": "CheckRun", "code": "custom", "field": "summary", "message": message}]
    output = {"title": "t", "summary": "s", "text": over}
    answer = await refused(gh, "PATCH", f"/repos/o/r/check-runs/{run_id}", {"output": output})
    assert answer["errors"][0]["message"] == "text exceeds a maximum bytesize of 65535"


async def test_the_fake_counts_comment_bodies_in_characters_as_github_does(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    gh = installation_client(settings, 1)
    created = await gh.arequest("POST", "/repos/o/r/issues/2/comments", json={"body": "é" * 65_536})
    answer = await refused(gh, "PATCH", f"/repos/o/r/issues/comments/{created.json()['id']}", {"body": "a" * 65_537})
    assert answer["errors"][0]["message"] == "Body is too long (maximum is 65536 characters)"


async def test_a_full_size_report_of_wide_characters_is_cut_within_the_byte_limit_and_links_the_run_page(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    publisher = Publisher(installation_client(settings, 1), "o", "r", 2, "a" * 40, APP_ID)
    check_id = await publisher.ensure_check(EVALS_CHECK, RUN_PAGE)
    summary = wide_text(60_000)  # under 65,535 characters, about 150,000 bytes

    await publisher.complete(check_id, "success", "evals passed", summary)

    run = fake_github.check_runs[check_id]
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    posted = run["output"]["summary"]
    assert len(posted.encode()) <= 65_535
    assert len(posted.encode()) > 65_535 - 300  # cut at the limit, not far below it
    kept, note = posted.split("\n\n…cut here")
    assert summary.startswith(kept)
    assert f"[The full report]({RUN_PAGE}) is on evalbot's run page." in note


async def test_a_long_sticky_comment_is_cut_in_characters_with_a_link_to_the_run_page(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    publisher = Publisher(installation_client(settings, 1), "o", "r", 2, "a" * 40, APP_ID)
    await publisher.upsert_comment(comment_body(wide_text(70_000), "a" * 40, RUN_PAGE))

    (comment,) = fake_github.comments.values()
    assert 65_000 < len(comment["body"]) <= 65_536
    assert f"[The full report]({RUN_PAGE}) is on evalbot's run page." in comment["body"]


async def test_an_annotation_message_is_cut_to_64_kb_of_utf8(fake_github: FakeGitHub, settings: Settings) -> None:
    publisher = Publisher(installation_client(settings, 1), "o", "r", 2, "a" * 40, APP_ID)
    check_id = await publisher.ensure_check(EVALS_CHECK)
    note = annotation("evals/qa.jsonl", 3, "warning", "Outlier", "✅" * 30_000)  # 90,000 bytes

    await publisher.complete(check_id, "failure", "t", "s", notes=[note])

    (posted,) = fake_github.annotations[check_id]
    assert 64 * 1024 - 4 < len(posted["message"].encode()) <= 64 * 1024
    assert posted["message"].endswith("✅…")


@pytest.mark.parametrize("status", ["waiting", "requested", "pending"])
async def test_the_fake_refuses_statuses_only_github_actions_sets(
    fake_github: FakeGitHub, settings: Settings, status: str
) -> None:
    gh = installation_client(settings, 1)
    answer = await refused(gh, "POST", "/repos/o/r/check-runs", {"name": "x", "head_sha": "a" * 40, "status": status})
    assert answer["message"] == "Only GitHub Actions can set a status of waiting, pending, or requested."


async def test_the_fake_refuses_a_stale_conclusion_only_github_sets(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    gh = installation_client(settings, 1)
    created = await gh.arequest("POST", "/repos/o/r/check-runs", json={"name": "x", "head_sha": "a" * 40})
    answer = await refused(gh, "PATCH", f"/repos/o/r/check-runs/{created.json()['id']}", {"conclusion": "stale"})
    assert answer["message"] == "You cannot change a check run conclusion to stale, only GitHub can set this."


async def test_the_collaborator_permission_is_a_legacy_role_and_maintainers_still_have_write_access(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    fake_github.permissions |= {"mona": "maintain", "tri": "triage"}
    gh = installation_client(settings, 1)
    answer = (await gh.arequest("GET", "/repos/o/r/collaborators/mona/permission")).json()
    assert (answer["permission"], answer["role_name"]) == ("write", "maintain")
    answer = (await gh.arequest("GET", "/repos/o/r/collaborators/tri/permission")).json()
    assert (answer["permission"], answer["role_name"]) == ("read", "triage")
    assert await has_write_access(gh, "o", "r", "mona")
    assert not await has_write_access(gh, "o", "r", "tri")


async def test_the_fake_answers_bad_credentials_to_an_unknown_token(fake_github: FakeGitHub) -> None:
    async with httpx.AsyncClient(base_url=fake_github.url) as http:
        response = await http.get("/repos/o/r/pulls/2", headers={"authorization": "token ghs_not_issued"})
    assert response.status_code == 401
    assert response.json()["message"] == "Bad credentials"
