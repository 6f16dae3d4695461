"""Patterns a pull request supplies, matched under a time bound.

Python's `re` holds the GIL for a whole match, and a pattern like `^(a|a)*$` on a 41-character string
backtracks for minutes: a thread does not help, the worker's event loop (heartbeats, every other pull
request) stops. Every JSON Schema `pattern` and `patternProperties` key from a pull request is matched
here instead, with the `regex` module: a time bound per validation, and the GIL released while it matches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import regex
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

# What one validation (a dataset row, a model answer) may spend matching patterns in all.
PATTERN_BUDGET_S = 1.0

# The validation under way: its deadline (time.monotonic()) and budget; unset, each match gets PATTERN_BUDGET_S.
_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("evalbot_pattern_deadline", default=None)


class PatternError(Exception):
    """A schema's pattern cannot be used: it took longer than its bound, or it does not compile. The
    pattern is the problem, not the data."""

    def __init__(self, keyword: str, pattern: str, problem: str):
        super().__init__(f"`{keyword}` {pattern!r} {problem}")
        self.keyword, self.pattern = keyword, pattern


def search(keyword: str, pattern: str, text: str) -> bool:
    """Whether `pattern` matches somewhere in `text`, within what is left of the validation's budget.

    Raises:
        PatternError: the budget ran out, or the pattern is not a regular expression.
    """
    deadline, budget_s = _DEADLINE.get() or (time.monotonic() + PATTERN_BUDGET_S, PATTERN_BUDGET_S)
    left_s = deadline - time.monotonic()
    try:
        if left_s <= 0:
            raise TimeoutError
        # concurrent=True releases the GIL while matching: the event loop's thread runs meanwhile.
        return regex.search(pattern, text, timeout=left_s, concurrent=True) is not None
    except TimeoutError:
        problem = (
            f"took longer than {budget_s:g} s to match: a pattern must not backtrack without bound "
            "(nested or overlapping repeats such as (a|a)* or (a+)+)"
        )
        raise PatternError(keyword, pattern, problem) from None
    except regex.error as exc:
        raise PatternError(keyword, pattern, f"is not a regular expression: {exc}") from None


def _pattern(validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not search("pattern", pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Validator, properties: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in properties.items():
        for key, value in instance.items():
            if search("patternProperties", pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [
        key
        for key in instance
        if key not in properties and not any(search("patternProperties", p, key) for p in patterns)
    ]


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    # jsonschema's own keyword matches `patternProperties` keys with `re`: the same rule, bounded.
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(extra) for extra in sorted(extras))
        verb = "was" if len(extras) == 1 else "were"
        yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


BoundedValidator = validators.extend(
    Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties, "additionalProperties": _additional_properties},
)


def unbounded_keyword(schema: Any) -> str | None:
    """A keyword of `schema` that jsonschema would still match with `re` (unbounded), or None.

    `unevaluatedProperties` looks `patternProperties` up with `re` deep inside jsonschema: the pair is
    refused rather than matched without a bound.
    """
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(k for k in node if isinstance(k, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return "unevaluatedProperties" if {"unevaluatedProperties", "patternProperties"} <= found else None


def bounded_errors(
    validator: Validator, instance: Any, budget_s: float = PATTERN_BUDGET_S, first_only: bool = False
) -> list[ValidationError]:
    """`validator`'s errors on `instance`, its patterns matched within `budget_s` in all.

    Raises:
        PatternError: a pattern took the rest of the budget, or does not compile.
    """
    token = _DEADLINE.set((time.monotonic() + budget_s, budget_s))
    try:
        errors = []
        for error in validator.iter_errors(instance):
            errors.append(error)
            if first_only:
                break
        return errors
    finally:
        _DEADLINE.reset(token)
