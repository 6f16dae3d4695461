"""Patterns a pull request supplies are matched under a time bound, and never stop the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from bot.engine import graders as g
from bot.engine.graders import Sample
from bot.engine.patterns import PATTERN_BUDGET_S, BoundedValidator, PatternError, bounded_errors
from bot.errors import InputError, JudgeError
from bot.pipeline.config import DataGates, JsonSchemaGrader
from bot.pipeline.data_quality import check
from tests.loop_ticker import ticking
from tests.pipeline.test_data_quality import PROMPT, dataset, rows

# Backtracks exponentially on a run of "a" followed by anything else: minutes with `re` at 41 characters.
CATASTROPHIC = "^(a|a)*$"
SLOW_TEXT = "a" * 40 + "b"


def test_a_catastrophic_pattern_is_an_error_within_its_budget() -> None:
    validator = BoundedValidator({"type": "string", "pattern": CATASTROPHIC})
    # Unbounded, the match takes minutes: the per-test timeout would end the test.
    with pytest.raises(PatternError) as caught:
        bounded_errors(validator, SLOW_TEXT, budget_s=0.2)
    assert (caught.value.keyword, caught.value.pattern) == ("pattern", CATASTROPHIC)
    assert "took longer than 0.2 s to match" in str(caught.value)


def test_the_budget_is_for_the_whole_validation_not_each_match() -> None:
    # Forty slow keys: each match alone stays under the budget, all together do not.
    schema = {"type": "object", "patternProperties": {"^(a|a)*$": {"type": "string"}}}
    instance = {"a" * 18 + "b" + str(i): "x" for i in range(40)}
    with pytest.raises(PatternError) as caught:
        bounded_errors(BoundedValidator(schema), instance, budget_s=0.2)
    assert caught.value.keyword == "patternProperties"


@pytest.mark.parametrize(
    ("schema", "instance", "messages"),
    [
        ({"pattern": "^[a-z]+$"}, "abc", []),
        ({"pattern": "^[a-z]+$"}, "ab1", ["'ab1' does not match '^[a-z]+$'"]),
        (
            {"patternProperties": {"^n_": {"type": "integer"}}},
            {"n_x": "1", "other": "1"},
            ["'1' is not of type 'integer'"],
        ),
        (
            {"properties": {"id": {}}, "patternProperties": {"^x_": {}}, "additionalProperties": False},
            {"id": 1, "x_a": 2, "y": 3},
            ["Additional properties are not allowed ('y' was unexpected)"],
        ),
        ({"additionalProperties": {"type": "integer"}}, {"a": 1, "b": "2"}, ["'2' is not of type 'integer'"]),
    ],
)
def test_bounded_keywords_validate_as_jsonschema_does(
    schema: dict[str, Any], instance: Any, messages: list[str]
) -> None:
    assert [e.message for e in bounded_errors(BoundedValidator(schema), instance)] == messages


def test_unevaluated_properties_beside_pattern_properties_is_refused() -> None:
    schema = {"patternProperties": {"^x": {}}, "unevaluatedProperties": False}
    with pytest.raises(ValueError, match="`unevaluatedProperties` beside `patternProperties` is not supported"):
        JsonSchemaGrader.model_validate({"type": "json_schema", "schema": schema})


async def outcome_of(work: Awaitable[Any]) -> Any:
    """What `work` gave, or the exception it raised."""
    try:
        return await work
    except Exception as exc:
        return exc


async def test_a_dataset_schema_with_a_catastrophic_pattern_is_an_input_error_and_the_loop_runs_on() -> None:
    schema = f"type: object\nproperties:\n  guest_request: {{type: string, pattern: '{CATASTROPHIC}'}}\n"
    data = rows(["booking"] * 3)
    data[1]["guest_request"] = SLOW_TEXT

    def run() -> Any:
        # As the pipeline runs data checks: in a thread, off the event loop.
        return check("qa", dataset(data), None, DataGates(), PROMPT, schema=("evals/d.schema.yaml", schema))

    outcome, ticks = await ticking(outcome_of(asyncio.to_thread(run)))
    assert isinstance(outcome, InputError)
    assert outcome.path == "evals/d.schema.yaml"
    assert outcome.message.startswith(f"`pattern` '{CATASTROPHIC}' took longer than {PATTERN_BUDGET_S:g} s to match")
    assert "(on row 'c1' of evals/d.jsonl)" in outcome.message
    assert ticks.longest_busy_s < 0.1


async def test_the_json_schema_grader_with_a_catastrophic_pattern_errs_and_the_loop_runs_on() -> None:
    grader = g.json_schema({"type": "object", "properties": {"answer": {"type": "string", "pattern": CATASTROPHIC}}})
    sample = Sample(request="q", output='{"answer": "' + SLOW_TEXT + '"}', fields={})
    outcome, ticks = await ticking(outcome_of(grader.grade(sample)))
    assert isinstance(outcome, JudgeError)
    assert str(outcome).startswith(f"json_schema grader: `pattern` '{CATASTROPHIC}' took longer")
    assert ticks.longest_busy_s < 0.1
