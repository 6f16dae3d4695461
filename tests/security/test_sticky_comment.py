"""The sticky comment is the one this app wrote: another bot's or a user's comment with the marker is never edited."""

from __future__ import annotations

from arq import ArqRedis

from bot.github.constants import COMMENT_MARKER
from bot.github.flows.evaluate import evaluate_pull_request
from bot.settings import Settings
from tests.conftest import GitRepo
from tests.github.conftest import APP_ID, answers, build_pr_repo
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import StubLLM


async def test_another_bots_comment_with_the_marker_is_never_edited(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = (base, head)
    stub.handler = answers(9)
    planted = f"{COMMENT_MARKER}\n## evalbot: ✅ pass\n\nAll good, merge away."
    # Another app's bot (its own `performed_via_github_app`), and a user, both paste the marker first.
    other_bot = fake_github.add_comment(2, planted, "other-app[bot]", "Bot", app_id=int(APP_ID) + 1)
    user = fake_github.add_comment(2, planted, "mallory", "User")
    job = {"repo": "Codertocat/Hello-World", "installation_id": 1, "pr_number": 2, "head_sha": head}

    for _ in range(2):
        assert await evaluate_pull_request({"settings": settings, "redis": redis}, **job, only=["qa"]) == "pass"

    assert (other_bot["body"], other_bot["edits"]) == (planted, 0)
    assert (user["body"], user["edits"]) == (planted, 0)
    ours = [c for c in fake_github.comments.values() if c["id"] not in (other_bot["id"], user["id"])]
    # One comment of this app, created by the first run and edited in place by the second.
    assert len(ours) == 1
    assert ours[0]["performed_via_github_app"]["id"] == int(APP_ID)
    assert ours[0]["edits"] == 1 and ours[0]["body"].startswith(COMMENT_MARKER + "\n## evalbot: ✅ pass")
