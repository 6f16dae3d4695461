"""Run one variant (a model and rendered requests) over a dataset's cases and grade every answer."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.engine.concurrency import gather_or_cancel, map_bounded
from bot.engine.graders import Grade, Grader, Sample
from bot.engine.models import ModelClient
from bot.errors import ModelCallError


@dataclass(frozen=True)
class CaseInput:
    """A case ready to send: its id, category, row fields and chat messages."""

    id: str
    category: str | None
    fields: dict[str, Any]
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class VariantSpec:
    """What is under test: a model with its call parameters (the prompt is already in each case)."""

    name: str
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class CaseResult:
    """One answer to one case (one of `repeats` samples) and its grades; `error` when the call failed."""

    case_id: str
    category: str | None
    sample: int
    output: str = ""
    latency_s: float | None = None
    cost_usd: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None
    grades: tuple[Grade, ...] = field(default_factory=tuple)
    retried: bool = False
    # Answered from the response cache: `latency_s` was measured when the answer was made.
    stored: bool = False

    @property
    def passed(self) -> bool | None:
        """Passes every accuracy grader; None when the call failed, no grader ran, or a grader erred
        without another failing it (unknown is not wrong)."""
        verdicts = [g.passed for g in self.grades if g.kind == "accuracy"]
        if self.error is not None or not verdicts:
            return None
        if False in verdicts:
            return False
        return None if None in verdicts else True

    @property
    def hallucinated(self) -> bool | None:
        verdicts = [g.passed for g in self.grades if g.kind == "hallucination"]
        if self.error is not None or not verdicts or None in verdicts:
            return None
        return not all(verdicts)


ProgressCallback = Callable[[CaseResult], None]


def openai_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The prompt format's `tools: [{name, description, parameters?}]` as OpenAI function tools."""
    if not tools:
        return None
    converted = []
    for tool in tools:
        if tool.get("type") == "function":
            converted.append(tool)
            continue
        function = {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        converted.append({"type": "function", "function": function})
    return converted


async def run_variant(
    client: ModelClient,
    variant: VariantSpec,
    cases: Sequence[CaseInput],
    graders: Sequence[Grader],
    repeats: int = 1,
    on_result: ProgressCallback | None = None,
) -> list[CaseResult]:
    """Call the model on every case (`repeats` times each) and grade each answer.

    Args:
        client: the client for calls under test (concurrency, retries and cache live there).
        variant: the model and its parameters.
        cases: the cases, with messages rendered.
        graders: the graders, run concurrently on each answer.
        repeats: samples per case.
        on_result: called as each answer is graded (progress).

    Returns:
        One result per case and sample, in case order.
    """
    tools = openai_tools(variant.tools)

    async def one(case: CaseInput, sample: int) -> CaseResult:
        try:
            answer = await client.complete(
                variant.model,
                case.messages,
                temperature=variant.temperature,
                max_tokens=variant.max_tokens,
                tools=tools,
                sample=sample,
            )
        except ModelCallError as exc:
            result = CaseResult(case.id, case.category, sample, error=str(exc))
        else:
            grades = await _grade(graders, answer.text, case, answer.latency_s, answer.cost_usd)
            result = CaseResult(
                case.id,
                case.category,
                sample,
                output=answer.text,
                latency_s=answer.latency_s,
                cost_usd=answer.cost_usd,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                cached=answer.cached,
                grades=grades,
                retried=answer.retried,
                stored=answer.stored,
            )
        if on_result is not None:
            on_result(result)
        return result

    samples = [(case, s) for case in cases for s in range(repeats)]
    # Twice the provider's slots: enough waiting to keep them full, not one coroutine per sample.
    return await map_bounded(lambda sample: one(*sample), samples, 2 * client.concurrency)


@dataclass(frozen=True)
class TimedCall:
    """One call's latency, the case it answered, and whether it took more than one attempt."""

    case_id: str
    latency_s: float
    retried: bool


@dataclass(frozen=True)
class LatencyPair:
    """A case's base and head calls measured in the same run (one of its samples)."""

    sample: int
    base: TimedCall
    head: TimedCall


async def time_pairs(
    client: ModelClient,
    base: VariantSpec,
    head: VariantSpec,
    cases: Sequence[tuple[CaseInput, CaseInput]],
    rng: random.Random,
) -> list[LatencyPair]:
    """Measure the latency of base and head on each case, the two calls back to back in a random order,
    so that both meet the same provider load. `client` must not answer from a cache.

    Args:
        client: a client without a cache (its calls are spent and counted like any other).
        base: the base's model and parameters.
        head: the head's.
        cases: (the base's case, the head's case) with each one's rendered messages.
        rng: decides which of each pair goes first.

    Returns:
        One pair per case whose two calls both answered (a failed call drops its case), in case order.
    """
    orders = [rng.random() < 0.5 for _ in cases]

    async def timed(spec: VariantSpec, case: CaseInput) -> TimedCall:
        answer = await client.complete(
            spec.model,
            case.messages,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            tools=openai_tools(spec.tools),
            latency_sample=True,
        )
        return TimedCall(case.id, answer.latency_s, answer.retried)

    async def pair(index: int) -> LatencyPair | None:
        base_case, head_case = cases[index]
        try:
            if orders[index]:
                head_call = await timed(head, head_case)
                base_call = await timed(base, base_case)
            else:
                base_call = await timed(base, base_case)
                head_call = await timed(head, head_case)
        except ModelCallError:
            return None
        return LatencyPair(0, base_call, head_call)

    # A pair's two calls run one after the other, so a pair holds at most one of the provider's slots.
    timed_pairs = await map_bounded(pair, range(len(cases)), client.concurrency)
    return [p for p in timed_pairs if p is not None]


async def regrade(
    results: Sequence[CaseResult], cases: Sequence[CaseInput], graders: Sequence[Grader]
) -> list[CaseResult]:
    """The same answers graded by other graders (no call under test): a second exam on one run.

    Args:
        results: answers from `run_variant`.
        cases: the cases they answer (for each row's fields and request).
        graders: the graders to apply instead of the ones that graded `results`.
    """
    by_id = {case.id: case for case in cases}

    async def one(result: CaseResult) -> CaseResult:
        if result.error is not None:
            return result
        grades = await _grade(graders, result.output, by_id[result.case_id], result.latency_s, result.cost_usd)
        return replace(result, grades=grades)

    return await gather_or_cancel(*(one(r) for r in results))


async def _grade(
    graders: Sequence[Grader], output: str, case: CaseInput, latency_s: float | None, cost_usd: float | None
) -> tuple[Grade, ...]:
    sample = Sample(output, case.fields, case.messages[-1]["content"], latency_s, cost_usd)
    judging = [g for g in graders if g.applies is None or g.applies(sample)]
    if len(judging) == 1:
        # Most suites grade with one grader: awaited here, not in a task of its own for every answer.
        return (await judging[0](sample),)
    return tuple(await gather_or_cancel(*(g(sample) for g in judging)))
