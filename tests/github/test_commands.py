from __future__ import annotations

import pytest
from arq import ArqRedis

from bot.github.constants import HELP_KEY
from bot.github.flows import commands
from bot.github.flows.command_line import Command, Refusal, parse_command
from bot.settings import Settings
from bot.store import Store
from tests.conftest import GitRepo
from tests.github.conftest import build_pr_repo
from tests.github.fake_github import FakeGitHub


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/eval", Command("eval", raw="/eval")),
        (
            "please\n/eval guest-agent faq --models openai/gpt-4o,anthropic/claude-opus-4",
            Command(
                "eval",
                suites=("guest-agent", "faq"),
                models=("openai/gpt-4o", "anthropic/claude-opus-4"),
                raw="/eval guest-agent faq --models openai/gpt-4o,anthropic/claude-opus-4",
            ),
        ),
        ("/eval --budget=12.5", Command("eval", budget_usd=12.5, raw="/eval --budget=12.5")),
        ("/approve", Command("approve", raw="/approve")),
        (
            "/approve the drop is in the adversarial set only",
            Command(
                "approve",
                reason="the drop is in the adversarial set only",
                raw="/approve the drop is in the adversarial set only",
            ),
        ),
        ("/approve cancel", Command("approve_cancel", raw="/approve cancel")),
        ("/approve 1A2b3c4", Command("approve", sha="1a2b3c4", raw="/approve 1A2b3c4")),
        (
            "/approve 1a2b3c4d5e looks right",
            Command("approve", sha="1a2b3c4d5e", reason="looks right", raw="/approve 1a2b3c4d5e looks right"),
        ),
        ("/approve cafe ok", Command("approve", reason="cafe ok", raw="/approve cafe ok")),
        ("  /help", Command("help", raw="/help")),
        ("no command here", None),
        ("> /approve\nquoted only", None),
        ("```\n/approve\n```\ncode only", None),
        ("    /approve\nindented code only", None),
        ("```\n/approve\n```\n/help", Command("help", raw="/help")),
        ("/deploy now", Refusal("`/deploy` is not an evalbot command", raw="/deploy now")),
        ("/eval --fast", Refusal("unknown option `--fast` for `/eval`", raw="/eval --fast")),
        ("/eval --budget lots", Refusal("`--budget` takes an amount in USD, not 'lots'", raw="/eval --budget lots")),
        ("/eval --models", Refusal("`--models` needs a value", raw="/eval --models")),
    ],
)
def test_parse_command(body: str, expected: Command | Refusal | None) -> None:
    assert parse_command(body) == expected


async def test_help_is_answered_once_per_user_and_pull_request_an_hour(
    repo: GitRepo, fake_github: FakeGitHub, redis: ArqRedis, settings: Settings, job_store: Store
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = fake_github.pulls[3] = (base, head)
    ctx = {"settings": settings, "redis": redis, "store": job_store}

    async def ask(pr: int, user: str) -> None:
        await commands.handle_command(ctx, "Codertocat/Hello-World", 1, pr, user, {"name": "help"}, raw="/help")

    def replies(pr: int) -> list[str]:
        return [c["user"]["login"] for c in fake_github.comments.values() if c["issue"] == pr]

    for user in ("lead", "Lead", "dev"):
        await ask(2, user)
    await ask(3, "lead")
    # Once for lead (however the login is written), once for dev, once on the other pull request.
    assert (len(replies(2)), len(replies(3))) == (2, 1)
    key = HELP_KEY.format(repo="Codertocat/Hello-World", pr=2, user="lead")
    assert 3590 < await redis.ttl(key) <= 3600

    # The hour passes: answered again.
    await redis.delete(key)
    await ask(2, "lead")
    assert len(replies(2)) == 3
