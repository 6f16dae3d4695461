"""An installation without a permission a command needs gets told which and where; a team written by
its name is a config error naming its slug."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import ArqRedis
from githubkit.exception import RequestFailed

from bot.errors import InputError
from bot.github.api.client import installation_client
from bot.github.api.permissions import closest_missing, missing_permissions
from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK
from bot.pipeline.config import parse_config
from bot.settings import Settings
from bot.store import Store
from tests.conftest import GitRepo
from tests.github.conftest import answers, build_pr_repo, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.test_approval import REPO, PullRequest
from tests.stub_llm import StubLLM

INSTALLATION = 1  # the installation of the webhook fixtures


@pytest.fixture
async def pull(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings, run_worker: Any
) -> AsyncIterator[PullRequest]:
    """Pull request 2, evaluated, with `@acme/ai-leads` as the base's approvers."""
    base, head = build_pr_repo(repo, ["@acme/ai-leads"])
    stub.handler = answers(9)
    async with webhook_client(settings, redis) as http:
        pull = PullRequest(http, fake_github, run_worker, base, head)
        await pull.opened()
        yield pull


@pytest.mark.slow
async def test_team_approver_without_members_permission_gets_a_reply_naming_it(
    pull: PullRequest, fake_github: FakeGitHub, job_store: Store
) -> None:
    assert pull.check(EVALS_CHECK)["conclusion"] == "success"
    fake_github.teams["acme/ai-leads"] = {"tess"}
    # The app was installed before it asked for Members, or the owner never accepted the request.
    del fake_github.installation_permissions["members"]

    await pull.comment("tess", "/approve")

    assert pull.check(APPROVAL_CHECK)["conclusion"] == "action_required"
    (reply,) = pull.replies()
    assert reply.startswith(
        "@tess `/approve`: evalbot cannot do this, GitHub refused it: the app's installation lacks the "
        "**Members** permission (`members=read`)."
    )
    assert "**Permissions & events** → **Organization permissions** → **Members**: *Read-only*" in reply
    assert "accepts the new permission" in reply
    (refused,) = [e for e in job_store.audit_entries(REPO, 2) if e.kind == "refused"]
    assert refused.actor == "tess"


@pytest.mark.slow
async def test_members_permission_granted_lets_the_team_approve(pull: PullRequest, fake_github: FakeGitHub) -> None:
    fake_github.teams["acme/ai-leads"] = {"tess"}
    await pull.comment("tess", "/approve")
    assert pull.check(APPROVAL_CHECK)["conclusion"] == "success"
    assert pull.replies() == []


@pytest.mark.parametrize(
    ("written", "slug"),
    [("@acme/AI Leads", "@acme/ai-leads"), ("@acme/Platform & ML", "@acme/platform-ml"), ("@acme/QA", "@acme/qa")],
)
def test_a_team_written_by_its_name_is_a_config_error_naming_the_slug(written: str, slug: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_config(f'approvers: [alice, "{written}"]\n')
    assert f"'{slug}'" in str(raised.value)
    assert raised.value.line == 1


def test_team_slugs_and_logins_are_accepted() -> None:
    config = parse_config('approvers: [alice, "@acme/ai-leads", "@acme/ml_ops"]\n')
    assert config.approvers == ["alice", "@acme/ai-leads", "@acme/ml_ops"]


@pytest.mark.slow
async def test_an_approval_that_cannot_be_checked_any_more_does_not_count_and_says_why(
    pull: PullRequest, fake_github: FakeGitHub, redis: ArqRedis
) -> None:
    fake_github.teams["acme/ai-leads"] = {"tess"}
    await pull.comment("tess", "/approve")
    assert pull.check(APPROVAL_CHECK)["conclusion"] == "success"

    # The permission is withdrawn; then the approval check is published again (its Re-run button).
    del fake_github.installation_permissions["members"]
    await redis.enqueue_job("publish_head", repo=REPO, installation_id=INSTALLATION, head_sha=pull.head)
    await pull.run_worker()

    approval = pull.check(APPROVAL_CHECK)
    assert approval["conclusion"] == "action_required"
    assert approval["output"]["title"] == "Approval by tess cannot be checked: the app lacks Members: Read-only"
    assert "the owner then accepts it" in approval["output"]["summary"]


async def test_a_refusal_names_only_what_the_closest_accepted_set_lacks(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    del fake_github.installation_permissions["members"]
    # GitHub accepts either set; the installation has Contents, so only Members is missing from the second.
    accepted = "organization_administration=write, members=read; members=read, contents=read"
    fake_github.accepted_permissions["members"] = accepted
    # An installation no other test uses: its token is issued now, with the permissions above.
    gh = installation_client(settings, 4242)
    with pytest.raises(RequestFailed) as refused:
        await gh.arequest("GET", "/orgs/acme/teams/ai-leads/memberships/tess")

    missing = missing_permissions(refused.value)

    assert missing is not None
    assert [(p.name, p.level, p.label, p.level_label) for p in missing] == [("members", "read", "Members", "Read-only")]


def test_the_set_closest_to_granted_is_named_and_unknown_grants_name_the_first_set() -> None:
    accepted = "contents=read, statuses=read; issues=write, pull_requests=write"
    granted = {"issues": "write", "pull_requests": "read"}
    assert [(p.name, p.level) for p in closest_missing(accepted, granted)] == [("pull_requests", "write")]
    # Equally close: the first set's lacks.
    assert [p.name for p in closest_missing("contents=read; checks=write", {})] == ["contents"]
    # A level grants those below it: admin covers write.
    assert [p.name for p in closest_missing("checks=write, members=read", {"checks": "admin"})] == ["members"]
    assert [p.name for p in closest_missing(accepted, None)] == ["contents", "statuses"]
    # Every set granted yet refused: the token's permissions are out of date, GitHub's first set is named.
    assert [p.name for p in closest_missing(accepted, {"issues": "write", "pull_requests": "write"})] == [
        "contents",
        "statuses",
    ]
