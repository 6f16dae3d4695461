"""Limits GitHub enforces as it enforces them: check-run output in bytes of UTF-8, bodies in characters;
and the fake GitHub refusing what GitHub refuses (statuses and conclusions only GitHub sets, legacy
collaborator permissions, bad credentials, a completed check run reopened) and answering in GitHub's
shapes (renames, truncated trees, the app's permissions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from githubkit import GitHub
from githubkit.exception import RequestFailed

from bot.errors import InputError
from bot.github.api.client import app_auth, installation_client
from bot.github.api.permissions import has_write_access
from bot.github.api.publish import Publisher, annotation, comment_body
from bot.github.api.source import GitHubSource
from bot.github.constants import EVALS_CHECK
from bot.settings import Settings
from tests.conftest import GitRepo
from tests.github.conftest import APP_ID
from tests.github.fake_github import APP_PERMISSIONS, FakeGitHub

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


async def test_the_fake_asks_for_credentials_when_none_are_sent(fake_github: FakeGitHub) -> None:
    async with httpx.AsyncClient(base_url=fake_github.url) as http:
        response = await http.get("/repos/o/r/pulls/2")
    assert (response.status_code, response.json()["message"]) == (401, "Requires authentication")


async def test_the_fake_refuses_to_reopen_a_completed_check_run(fake_github: FakeGitHub, settings: Settings) -> None:
    gh = installation_client(settings, 1)
    body = {"name": "x", "head_sha": "a" * 40, "conclusion": "success"}
    created = (await gh.arequest("POST", "/repos/o/r/check-runs", json=body)).json()
    answer = await refused(gh, "PATCH", f"/repos/o/r/check-runs/{created['id']}", {"status": "in_progress"})
    assert answer["errors"][0]["message"] == "a completed check run cannot be reopened"
    assert fake_github.check_runs[created["id"]]["status"] == "completed"


async def test_the_fake_lists_a_rename_once_with_its_previous_name(
    repo: GitRepo, fake_github: FakeGitHub, settings: Settings
) -> None:
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(10)])
    base = repo.commit("base")
    repo.git("mv", "evals/qa.jsonl", "evals/golden.jsonl")
    head = repo.commit("rename")
    gh = installation_client(settings, 1)
    files = (await gh.arequest("GET", f"/repos/o/r/compare/{base}...{head}")).json()["files"]
    assert files == [{"filename": "evals/golden.jsonl", "previous_filename": "evals/qa.jsonl", "status": "renamed"}]
    # What a run takes as changed: both names.
    assert await GitHubSource(gh, "o", "r").changed_paths(base, head) == ["evals/golden.jsonl", "evals/qa.jsonl"]


async def test_the_fake_truncates_a_tree_too_large_to_list_and_a_run_says_so(
    repo: GitRepo, fake_github: FakeGitHub, settings: Settings
) -> None:
    for name in ("a", "b", "c"):
        repo.write(f"{name}.txt", name)
    sha = repo.commit("three files")
    fake_github.tree_entries_max = 2
    gh = installation_client(settings, 1)
    answer = (await gh.arequest("GET", f"/repos/o/r/git/trees/{sha}", params={"recursive": "1"})).json()
    assert (len(answer["tree"]), answer["truncated"]) == (2, True)
    with pytest.raises(InputError, match="too large to read whole"):
        await GitHubSource(gh, "o", "r").tree(sha)


async def test_the_fakes_installations_have_the_permissions_app_yml_asks_for(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    manifest = yaml.safe_load((Path(__file__).resolve().parents[2] / "app.yml").read_text())
    assert manifest["default_permissions"] == APP_PERMISSIONS
    assert APP_PERMISSIONS["merge_queues"] == "read"
    gh = GitHub(app_auth(settings), base_url=fake_github.url)
    token = (await gh.arequest("POST", "/app/installations/1/access_tokens")).json()
    assert token["permissions"] == manifest["default_permissions"]
