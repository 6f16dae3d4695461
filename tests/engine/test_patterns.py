"""Patterns a pull request supplies are matched under a time bound, and never stop the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.engine import graders as g
from bot.engine.graders import Sample
from bot.engine.patterns import PATTERN_BUDGET_S, BoundedValidator, PatternError, bounded_errors
from bot.errors import InputError, JudgeError
from bot.pipeline.config import DataGates, JsonSchemaGrader
from bot.pipeline.data_quality import check
from tests.pipeline.test_data_quality import PROMPT, dataset, rows

# Backtracks exponentially on a run of "a" followed by anything else: minutes with `re` at 41 characters.
CATASTROPHIC = "^(a|a)*$"
SLOW_TEXT = "a" * 40 + "b"


def test_a_catastrophic_pattern_is_an_error_within_its_budget() -> None:
    validator = BoundedValidator({"type": "string", "pattern": CATASTROPHIC})
    started = time.monotonic()
    with pytest.raises(PatternError) as caught:
        bounded_errors(validator, SLOW_TEXT, budget_s=0.2)
    assert time.monotonic() - started < 1.0
    assert (caught.value.keyword, caught.value.pattern) == ("pattern", CATASTROPHIC)
    assert "took longer than 0.2 s to match" in str(caught.value)


def test_the_budget_is_for_the_whole_validation_not_each_match() -> None:
    # Forty slow keys: each match alone stays under the budget, all together do not.
    schema = {"type": "object", "patternProperties": {"^(a|a)*$": {"type": "string"}}}
    instance = {"a" * 18 + "b" + str(i): "x" for i in range(40)}
    started = time.monotonic()
    with pytest.raises(PatternError) as caught:
        bounded_errors(BoundedValidator(schema), instance, budget_s=0.2)
    assert time.monotonic() - started < 1.0
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


async def max_loop_stall_s(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """The longest the event loop went without running a ready task while `work` ran, and what it gave
    (or raised): a ticker that asks to run every 5 ms measures it, as the worker's heartbeat would feel it."""
    stall = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal stall
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            stall = max(stall, now - last - 0.005)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        outcome: Any = await work()
    except Exception as exc:
        outcome = exc
    done.set()
    await ticking
    return stall, outcome


async def test_a_dataset_schema_with_a_catastrophic_pattern_is_an_input_error_and_the_loop_runs_on() -> None:
    schema = f"type: object\nproperties:\n  guest_request: {{type: string, pattern: '{CATASTROPHIC}'}}\n"
    data = rows(["booking"] * 3)
    data[1]["guest_request"] = SLOW_TEXT

    def run() -> Any:
        # As the pipeline runs data checks: in a thread, off the event loop.
        return check("qa", dataset(data), None, DataGates(), PROMPT, schema=("evals/d.schema.yaml", schema))

    started = time.monotonic()
    stall_s, outcome = await max_loop_stall_s(lambda: asyncio.to_thread(run))
    assert isinstance(outcome, InputError)
    assert outcome.path == "evals/d.schema.yaml"
    assert outcome.message.startswith(f"`pattern` '{CATASTROPHIC}' took longer than {PATTERN_BUDGET_S:g} s to match")
    assert "(on row 'c1' of evals/d.jsonl)" in outcome.message
    assert time.monotonic() - started < PATTERN_BUDGET_S + 2.0
    assert stall_s < 0.1


async def test_the_json_schema_grader_with_a_catastrophic_pattern_errs_and_the_loop_runs_on() -> None:
    grader = g.json_schema({"type": "object", "properties": {"answer": {"type": "string", "pattern": CATASTROPHIC}}})
    sample = Sample(request="q", output='{"answer": "' + SLOW_TEXT + '"}', fields={})
    stall_s, outcome = await max_loop_stall_s(lambda: grader.grade(sample))
    assert isinstance(outcome, JudgeError)
    assert str(outcome).startswith(f"json_schema grader: `pattern` '{CATASTROPHIC}' took longer")
    assert stall_s < 0.1
