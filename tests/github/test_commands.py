from __future__ import annotations

import pytest

from bot.github.flows.command_line import Command, Refusal, parse_command


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
