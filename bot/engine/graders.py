"""Graders: small factories that each return an async callable scoring one model answer."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import regex as regex_module

from bot.engine.models import ModelClient
from bot.errors import JudgeError, ModelCallError

Kind = Literal["accuracy", "hallucination"]
# Sent as `max_tokens` on every judge call, and assumed by the budget estimate: room for a verdict
# with a reason per criterion or a claim list with quotes, and no more.
JUDGE_MAX_TOKENS = 1024

# A regex grader's time per match. A pattern from a pull request (or a row) can backtrack for
# minutes; the `regex` module stops it at this limit, and the match runs in a thread so the event
# loop (other jobs' progress, arq's own job timeout) keeps going meanwhile.
REGEX_TIMEOUT_S = 0.1


@dataclass(frozen=True)
class Sample:
    """What a grader sees: the answer, the dataset row it answers, and the rendered request."""

    output: str
    fields: dict[str, Any]
    request: str


@dataclass(frozen=True)
class Grade:
    """A grader's verdict on one answer; `passed` is None when the grader itself failed (`error`)."""

    grader: str
    kind: Kind
    passed: bool | None
    reason: str = ""
    score: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Grader:
    """A named grader: `kind` says which metric it feeds; `grade` does the work."""

    name: str
    kind: Kind
    grade: Callable[[Sample], Awaitable[Grade]]

    async def __call__(self, sample: Sample) -> Grade:
        try:
            return await self.grade(sample)
        except (JudgeError, ModelCallError) as exc:
            return Grade(self.name, self.kind, None, error=str(exc))


class _MissingField(JudgeError):
    pass


def _field(sample: Sample, name: str) -> Any:
    if name not in sample.fields or sample.fields[name] in (None, ""):
        raise _MissingField(f"row has no `{name}`")
    return sample.fields[name]


def _norm(text: str, ignore_case: bool) -> str:
    text = " ".join(text.split())
    return text.casefold() if ignore_case else text


def equals(field: str = "expected", ignore_case: bool = False) -> Grader:
    """Pass when the answer equals the row's `field` (surrounding and repeated white space ignored).

    Args:
        field: the row field holding the reference answer.
        ignore_case: compare case-insensitively.
    """

    async def grade(sample: Sample) -> Grade:
        expected = str(_field(sample, field))
        passed = _norm(sample.output, ignore_case) == _norm(expected, ignore_case)
        return Grade("equals", "accuracy", passed, "" if passed else f"expected {expected!r}")

    return Grader("equals", "accuracy", grade)


def contains(field: str = "expected", ignore_case: bool = True) -> Grader:
    """Pass when the answer contains the row's `field` (every item, when it is a list).

    Args:
        field: the row field holding the text (or texts) the answer must contain.
        ignore_case: compare case-insensitively.
    """

    async def grade(sample: Sample) -> Grade:
        value = _field(sample, field)
        needles = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        haystack = _norm(sample.output, ignore_case)
        missing = [n for n in needles if _norm(n, ignore_case) not in haystack]
        return Grade("contains", "accuracy", not missing, f"missing {missing!r}" if missing else "")

    return Grader("contains", "accuracy", grade)


def regex(pattern: str | None = None, field: str | None = None, ignore_case: bool = False) -> Grader:
    """Pass when the answer matches a regular expression, given inline or in a row field.

    Args:
        pattern: the expression, the same for every row.
        field: the row field holding each row's expression (when `pattern` is None).
        ignore_case: match case-insensitively.
    """
    flags = regex_module.IGNORECASE if ignore_case else 0
    compiled = regex_module.compile(pattern, flags) if pattern is not None else None

    async def grade(sample: Sample) -> Grade:
        try:
            expression = compiled or regex_module.compile(str(_field(sample, field or "expected")), flags)
        except regex_module.error as exc:
            raise JudgeError(f"bad regular expression in the row: {exc}") from None
        try:
            # concurrent=True releases the GIL while matching, so the loop's thread runs meanwhile.
            found = await asyncio.to_thread(expression.search, sample.output, timeout=REGEX_TIMEOUT_S, concurrent=True)
        except TimeoutError:
            raise JudgeError(
                f"regular expression took too long (over {REGEX_TIMEOUT_S:g} s on this answer): {expression.pattern!r}"
            ) from None
        passed = found is not None
        return Grade("regex", "accuracy", passed, "" if passed else f"no match for {expression.pattern!r}")

    return Grader("regex", "accuracy", grade)


def json_schema(schema: dict[str, Any]) -> Grader:
    """Pass when the answer is JSON (code fences allowed) valid under a JSON Schema (Draft 2020-12).

    Its patterns are matched under a time bound, off the event loop (bot/engine/patterns.py): a pattern
    that backtracks without bound is the grader's error, never a frozen worker.

    Args:
        schema: the JSON Schema the answer must satisfy.
    """
    from jsonschema import Draft202012Validator

    from bot.engine.patterns import BoundedValidator, PatternError, bounded_errors, unbounded_keyword

    Draft202012Validator.check_schema(schema)
    unbounded = unbounded_keyword(schema)
    if unbounded is not None:
        raise ValueError(f"`{unbounded}` beside `patternProperties` is not supported in a json_schema grader")
    validator = BoundedValidator(schema)

    async def grade(sample: Sample) -> Grade:
        try:
            value = json.loads(_strip_fences(sample.output))
        except json.JSONDecodeError as exc:
            return Grade("json_schema", "accuracy", False, f"not JSON: {exc.msg}")
        try:
            errors = await asyncio.to_thread(bounded_errors, validator, value, first_only=True)
        except PatternError as exc:
            raise JudgeError(f"json_schema grader in .evalbot.yml: {exc}") from None
        if not errors:
            return Grade("json_schema", "accuracy", True)
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return Grade("json_schema", "accuracy", False, f"{where}: {error.message}")

    return Grader("json_schema", "accuracy", grade)


RUBRIC_SYSTEM = (
    "You are a strict evaluator of an AI assistant's answer. Score the answer on each criterion from 0 "
    "(fails it completely) to 10 (perfect), with a one-sentence reason. Reply with JSON only, no prose: "
    '{"scores": {"<criterion>": {"score": <0-10>, "reason": "<why>"}}}'
)


def rubric(client: ModelClient, judge_model: str, criteria: list[str], pass_score: float = 7.0) -> Grader:
    """A judge model scores each criterion 0-10; pass when every criterion reaches `pass_score`.

    Args:
        client: the client for judge calls (its spend is the evaluation's own cost).
        judge_model: the litellm model name of the judge.
        criteria: what to score, e.g. correctness, tone, safety.
        pass_score: the lowest score a criterion may get in a passing answer.
    """

    async def grade(sample: Sample) -> Grade:
        messages = rubric_messages(criteria, sample.request, sample.output, sample.fields)
        answer = await client.complete(judge_model, messages, temperature=0, max_tokens=JUDGE_MAX_TOKENS)
        data = parse_judge_json(answer.text)
        table = data.get("scores", data) if isinstance(data.get("scores", data), dict) else {}
        scores: dict[str, float] = {}
        reasons = []
        for criterion in criteria:
            entry = table.get(criterion)
            value = entry.get("score") if isinstance(entry, dict) else entry
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
                raise JudgeError(f"judge gave no 0-10 score for {criterion!r}: {_clip(answer.text)}")
            scores[criterion] = float(value)
            if isinstance(entry, dict) and entry.get("reason"):
                reasons.append(f"{criterion}: {entry['reason']}")
        passed = all(score >= pass_score for score in scores.values())
        mean = sum(scores.values()) / len(scores)
        return Grade("rubric", "accuracy", passed, "; ".join(reasons), score=mean, scores=scores)

    return Grader("rubric", "accuracy", grade)


def rubric_messages(criteria: list[str], request: str, output: str, fields: dict[str, Any]) -> list[dict[str, str]]:
    """What the rubric judge is sent: the criteria, the request, the answer and the row's reference answer."""
    user = f"Criteria: {', '.join(criteria)}\n\nREQUEST:\n{request}\n\nANSWER:\n{output}\n\n" + (
        f"REFERENCE ANSWER:\n{fields['expected']}\n" if fields.get("expected") else ""
    )
    return [{"role": "system", "content": RUBRIC_SYSTEM}, {"role": "user", "content": user}]


def similarity(client: ModelClient, model: str, field: str = "expected", threshold: float = 0.8) -> Grader:
    """Pass when the cosine similarity of the answer's and the reference's embeddings reaches `threshold`.

    Args:
        client: the client for embedding calls.
        model: the litellm embedding model.
        field: the row field holding the reference answer.
        threshold: the lowest cosine similarity that passes.
    """

    async def grade(sample: Sample) -> Grade:
        expected = str(_field(sample, field))
        answer_vec, expected_vec = await client.embed(model, [sample.output or " ", expected])
        score = cosine(answer_vec, expected_vec)
        return Grade("similarity", "accuracy", score >= threshold, f"cosine {score:.3f}", score=score)

    return Grader("similarity", "accuracy", grade)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


HALLUCINATION_SYSTEM = (
    "You check an AI assistant's answer against the CONTEXT it was given. List every factual claim the "
    "answer makes. For each, say whether the CONTEXT supports it and quote the exact supporting words "
    "from the CONTEXT as evidence. Reply with JSON only, no prose: "
    '{"claims": [{"claim": "<claim>", "supported": true|false, "evidence": "<exact quote or empty>"}]}'
)


def hallucination(
    client: ModelClient | None = None,
    judge_model: str | None = None,
    context_field: str = "context",
    method: Literal["judge", "overlap"] = "judge",
) -> Grader:
    """Flag an answer that makes a claim its row's context does not support.

    With `method="judge"`, a judge lists the claims with a quoted evidence span each, and a claim counts
    as supported only when that span really is in the context. With `method="overlap"`, no model is
    called: every number, date, time, URL and quoted string in the answer must appear in the context or
    the request (an answer may repeat what the guest said).

    Args:
        client: the client for judge calls (judge method).
        judge_model: the litellm model name of the judge (judge method).
        context_field: the row field with the grounding text (or list of texts).
        method: "judge" or "overlap".
    """

    async def grade(sample: Sample) -> Grade:
        context = context_text(_field(sample, context_field))
        if method == "overlap":
            unsupported = unsupported_facts(sample.output, context + "\n" + sample.request)
        else:
            assert client is not None and judge_model is not None, "the judge method needs a client and model"
            unsupported = await _judge_claims(client, judge_model, sample.output, context)
        reason = f"unsupported: {'; '.join(unsupported)}" if unsupported else ""
        # `passed` means "no hallucination", so the grade reads the same way as the others.
        return Grade("hallucination", "hallucination", not unsupported, reason)

    return Grader("hallucination", "hallucination", grade)


def context_text(raw: Any) -> str:
    """A row's grounding context as one text (a list of passages, one per line)."""
    return "\n".join(map(str, raw)) if isinstance(raw, list) else str(raw)


def hallucination_messages(context: str, output: str) -> list[dict[str, str]]:
    """What the hallucination judge is sent: the context and the answer."""
    return [
        {"role": "system", "content": HALLUCINATION_SYSTEM},
        {"role": "user", "content": f"CONTEXT:\n{context}\n\nANSWER:\n{output}"},
    ]


async def _judge_claims(client: ModelClient, judge_model: str, output: str, context: str) -> list[str]:
    messages = hallucination_messages(context, output)
    answer = await client.complete(judge_model, messages, temperature=0, max_tokens=JUDGE_MAX_TOKENS)
    claims = parse_judge_json(answer.text).get("claims")
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise JudgeError(f"judge gave no list of claims: {_clip(answer.text)}")
    haystack = _norm(context, ignore_case=True)
    unsupported = []
    for claim in claims:
        evidence = _norm(str(claim.get("evidence") or ""), ignore_case=True)
        # A judge can say "supported" and invent the quote: the span must really be in the context.
        if claim.get("supported") is not True or not evidence or evidence not in haystack:
            unsupported.append(str(claim.get("claim", "?")))
    return unsupported


_FACTS = [
    re.compile(r"https?://[^\s)\]>\"']+"),
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
    re.compile(r"\b\d{1,2}:\d{2}\b"),
    re.compile(r"\"([^\"\n]{2,200})\""),
    re.compile(r"\d+(?:[.,]\d+)*(?:\s?%)?"),
]


def unsupported_facts(answer: str, source: str) -> list[str]:
    """Numbers, dates, times, URLs and quoted strings of `answer` that do not appear in `source`."""
    haystack = _norm(source, ignore_case=True)
    facts: list[str] = []
    remaining = answer
    for pattern in _FACTS:
        for match in pattern.finditer(remaining):
            fact = (match.group(1) if pattern.groups else match.group(0)).rstrip(".,")
            if fact and fact not in facts:
                facts.append(fact)
        # The digits of a URL, date or quote are not separate numbers.
        remaining = pattern.sub(" ", remaining)
    return [fact for fact in facts if _norm(fact, ignore_case=True) not in haystack]


def parse_judge_json(text: str) -> dict[str, Any]:
    """The first JSON object in a judge's answer, tolerating code fences and prose around it.

    Raises:
        JudgeError: when there is no JSON object to be found.
    """
    cleaned = _strip_fences(text)
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(cleaned) if ch == "{"):
        try:
            value, _end = decoder.raw_decode(cleaned, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise JudgeError(f"judge answer is not JSON: {_clip(text)}")


def _strip_fences(text: str) -> str:
    match = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    return match.group(1).strip() if match else text.strip()


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "…")
