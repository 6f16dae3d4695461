"""The promptfoo-style graders as `.evalbot.yml` writes them, validated and built."""

from __future__ import annotations

import pytest
import yaml

from bot.engine.graders import Sample
from bot.engine.models import ModelClient
from bot.errors import InputError
from bot.pipeline.config import parse_config, uses_judge
from bot.pipeline.run import build_graders

GRADERS = [
    {"type": "contains_any", "values": ["refund", "credit"]},
    {"type": "contains_all", "field": "keywords", "ignore_case": True},
    {"type": "is_json", "schema": {"type": "object", "required": ["status"]}},
    {"type": "contains_json"},
    {"type": "levenshtein", "field": "expected", "max_distance": 2},
    {"type": "latency", "max_ms": 2000},
    {"type": "cost", "max_usd": 0.01},
    {"type": "not", "grader": {"type": "contains", "field": "forbidden"}},
    {"type": "closed_qa", "value": "mentions the refund window"},
    {"type": "factuality"},
]


def config_with(graders: list[dict[str, object]]) -> str:
    suite = {"name": "s", "prompt": "p.yaml", "dataset": "d.jsonl", "graders": graders}
    return yaml.safe_dump({"suites": [suite]})


async def test_the_graders_validate_and_build() -> None:
    suite = parse_config(config_with(GRADERS)).suites[0]
    built = build_graders(suite.graders, ModelClient(), "openai/judge")
    assert [g.name for g in built] == [
        "contains_any",
        "contains_all",
        "is_json",
        "contains_json",
        "levenshtein",
        "latency",
        "cost",
        "not_contains",
        "closed_qa",
        "factuality",
    ]
    assert [uses_judge(g) for g in suite.graders] == [False] * 8 + [True, True]
    sample = Sample('{"status": "refund issued"}', {"keywords": ["REFUND"], "forbidden": "sorry"}, "q", 0.5, 0.001)
    verdicts = [(await g(sample)).passed for g in built[:3]] + [(await built[7](sample)).passed]
    assert verdicts == [True, True, True, True]


@pytest.mark.parametrize(
    ("grader", "message"),
    [
        ({"type": "contains_any", "values": ["a"], "field": "x"}, "exactly one of an inline value or `field`"),
        ({"type": "contains_all"}, "exactly one of an inline value or `field`"),
        ({"type": "latency", "max_ms": 0}, "greater than 0"),
        ({"type": "is_json", "schema": {"type": "nonsense"}}, "schema is not a valid JSON Schema"),
        ({"type": "not", "grader": {"type": "nope"}}, "does not match any of the expected tags"),
    ],
)
def test_a_wrong_grader_is_an_input_error(grader: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_config(config_with([grader]))
