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
import yaml

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
    # The call's own measurements, for the latency and cost graders (None: not measured, or cached).
    latency_s: float | None = None
    cost_usd: float | None = None


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
    # Which answers this grader judges (None: every one); a test's own assertion grades that test only.
    applies: Callable[[Sample], bool] | None = None

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
        accepted = _references(sample, field)
        answer = _norm(sample.output, ignore_case)
        passed = any(answer == _norm(reference, ignore_case) for reference in accepted)
        expected = accepted[0] if len(accepted) == 1 else accepted
        return Grade("equals", "accuracy", passed, "" if passed else f"expected {expected!r}")

    return Grader("equals", "accuracy", grade)


def _references(sample: Sample, field: str) -> list[str]:
    """The row's reference answer, or its list of acceptable answers."""
    value = _field(sample, field)
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def contains(field: str = "expected", ignore_case: bool = True, match: Literal["all", "any"] = "all") -> Grader:
    """Pass when the answer contains the row's `field` (every item, or any one, when it is a list).

    Args:
        field: the row field holding the text (or texts) the answer must contain.
        ignore_case: compare case-insensitively.
        match: "all": every item of a list; "any": one of them (OpenAI evals' Includes).
    """

    async def grade(sample: Sample) -> Grade:
        needles = _references(sample, field)
        haystack = _norm(sample.output, ignore_case)
        missing = [n for n in needles if _norm(n, ignore_case) not in haystack]
        passed = not missing if match == "all" else len(missing) < len(needles)
        return Grade("contains", "accuracy", passed, "" if passed else f"missing {missing!r}")

    return Grader("contains", "accuracy", grade)


def starts_with(field: str = "expected", ignore_case: bool = False) -> Grader:
    """Pass when the answer starts with the row's `field`, or one of its list (OpenAI evals' Match).

    Args:
        field: the row field holding the reference answer (or acceptable answers).
        ignore_case: compare case-insensitively.
    """

    async def grade(sample: Sample) -> Grade:
        accepted = _references(sample, field)
        answer = sample.output.strip()
        answer = answer.casefold() if ignore_case else answer
        passed = any(answer.startswith(r.strip().casefold() if ignore_case else r.strip()) for r in accepted)
        return Grade("starts_with", "accuracy", passed, "" if passed else f"does not start with {accepted!r}")

    return Grader("starts_with", "accuracy", grade)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")


def fuzzy_normalise(text: str) -> str:
    """OpenAI evals' normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", _PUNCTUATION.sub("", text.lower())).split())


def fuzzy_match(field: str = "expected") -> Grader:
    """Pass when the normalised answer contains a normalised reference or is contained in one (OpenAI
    evals' FuzzyMatch); the row's `field` may list several acceptable answers.

    Args:
        field: the row field holding the reference answer (or acceptable answers).
    """

    async def grade(sample: Sample) -> Grade:
        answer = fuzzy_normalise(sample.output)
        for reference in _references(sample, field):
            wanted = fuzzy_normalise(reference)
            if (answer == wanted) if not answer or not wanted else (wanted in answer or answer in wanted):
                return Grade("fuzzy_match", "accuracy", True)
        return Grade("fuzzy_match", "accuracy", False, f"no fuzzy match with {_references(sample, field)!r}")

    return Grader("fuzzy_match", "accuracy", grade)


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

    Args:
        schema: the JSON Schema the answer must satisfy.
    """
    first_error = _schema_validator(schema, "json_schema")

    async def grade(sample: Sample) -> Grade:
        try:
            value = json.loads(_strip_fences(sample.output))
        except json.JSONDecodeError as exc:
            return Grade("json_schema", "accuracy", False, f"not JSON: {exc.msg}")
        error = await first_error(value)
        return Grade("json_schema", "accuracy", error is None, error or "")

    return Grader("json_schema", "accuracy", grade)


RUBRIC_SYSTEM = (
    "You are a strict evaluator of an AI assistant's answer. Score the answer on each criterion from 0 "
    "(fails it completely) to 10 (perfect), with a one-sentence reason. Reply with JSON only, no prose: "
    '{"scores": {"<criterion>": {"score": <0-10>, "reason": "<why>"}}}'
)


def rubric(
    client: ModelClient, judge_model: str, criteria: list[str], pass_score: float = 7.0, field: str = "expected"
) -> Grader:
    """A judge model scores each criterion 0-10; pass when every criterion reaches `pass_score`.

    Args:
        client: the client for judge calls (its spend is the evaluation's own cost).
        judge_model: the litellm model name of the judge.
        criteria: what to score, e.g. correctness, tone, safety.
        pass_score: the lowest score a criterion may get in a passing answer.
        field: the row field shown to the judge as the reference answer, when the row has one.
    """

    async def grade(sample: Sample) -> Grade:
        messages = rubric_messages(criteria, sample.request, sample.output, sample.fields, field)
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


def rubric_messages(
    criteria: list[str], request: str, output: str, fields: dict[str, Any], field: str = "expected"
) -> list[dict[str, str]]:
    """What the rubric judge is sent: the criteria, the request, the answer and the row's reference answer."""
    user = f"Criteria: {', '.join(criteria)}\n\nREQUEST:\n{request}\n\nANSWER:\n{output}\n\n" + (
        f"REFERENCE ANSWER:\n{fields[field]}\n" if fields.get(field) else ""
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


# Deterministic graders with promptfoo's semantics (its assertion types of the same names), so a
# promptfoo suite counts the same passes under evalbot: no white-space folding, case kept unless the
# grader says otherwise. Each takes its value inline or from a row field.


def _value(sample: Sample, value: Any, field: str | None) -> Any:
    return value if field is None else _field(sample, field)


def equals_exact(value: Any = None, field: str | None = None) -> Grader:
    """Pass when the answer is the reference character for character (promptfoo's `equals`); a
    reference that is an object or a list is compared with the answer parsed as JSON.

    Args:
        value: the reference (inline).
        field: the row field holding it (when `value` is None).
    """

    async def grade(sample: Sample) -> Grade:
        expected = _value(sample, value, field)
        if isinstance(expected, dict | list):
            try:
                passed = json.loads(sample.output) == expected
            except json.JSONDecodeError:
                passed = False
            expected = json.dumps(expected)
        else:
            passed = sample.output == str(expected)
        return Grade("equals", "accuracy", passed, "" if passed else f"expected {_clip(str(expected))}")

    return Grader("equals", "accuracy", grade)


def split_values(text: str) -> list[str]:
    """A comma-separated list as promptfoo reads one: fields trimmed, `"quoted, fields"` kept whole
    (with `\\"` or `""` for a quote), empty fields dropped.

    Raises:
        ValueError: for an unterminated quote, or text after a closing quote.
    """
    values: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and (text[i].isspace() or text[i] == ","):
            i += 1
        if i >= n:
            break
        if text[i] != '"':
            end = text.find(",", i)
            end = n if end < 0 else end
            values.append(text[i:end].strip())
            i = end
            continue
        i += 1
        chars: list[str] = []
        while i < n:
            if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\':
                chars.append(text[i + 1])
                i += 2
            elif text[i] == '"' and i + 1 < n and text[i + 1] == '"':
                chars.append('"')
                i += 2
            elif text[i] == '"':
                break
            else:
                chars.append(text[i])
                i += 1
        else:
            raise ValueError(f"unterminated quoted value in {text!r}")
        values.append("".join(chars))
        i += 1
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] != ",":
            raise ValueError(f"expected a comma after a quoted value in {text!r}")
    return values


def _texts(raw: Any) -> list[str]:
    if isinstance(raw, list):
        return [str(v) for v in raw]
    try:
        return split_values(str(raw))
    except ValueError as exc:
        raise JudgeError(str(exc)) from None


def contains_texts(
    values: list[str] | str | None = None,
    field: str | None = None,
    mode: Literal["any", "all"] = "all",
    ignore_case: bool = False,
) -> Grader:
    """Pass when the answer contains all (or any) of some texts, as they are (promptfoo's
    contains, icontains, contains-all, contains-any and their i- forms).

    Args:
        values: the texts, or one comma-separated text (quotes keep a comma in a value).
        field: the row field holding them (when `values` is None).
        mode: "all" to need every text, "any" to need one.
        ignore_case: compare lower-cased.
    """
    name = f"contains_{mode}"

    async def grade(sample: Sample) -> Grade:
        needles = _texts(_value(sample, values, field))
        output = sample.output.lower() if ignore_case else sample.output
        found = [n for n in needles if (n.lower() if ignore_case else n) in output]
        passed = bool(found) if mode == "any" else len(found) == len(needles)
        missing = [n for n in needles if n not in found]
        reason = "" if passed else (f"none of {needles!r}" if mode == "any" else f"missing {missing!r}")
        return Grade(name, "accuracy", passed, reason)

    return Grader(name, "accuracy", grade)


def starts_with_text(value: str | None = None, field: str | None = None) -> Grader:
    """Pass when the answer starts with a text, as it is (no white space trimmed).

    Args:
        value: the text.
        field: the row field holding it (when `value` is None).
    """

    async def grade(sample: Sample) -> Grade:
        prefix = str(_value(sample, value, field))
        passed = sample.output.startswith(prefix)
        return Grade("starts_with", "accuracy", passed, "" if passed else f"does not start with {prefix!r}")

    return Grader("starts_with", "accuracy", grade)


def _schema_validator(schema: dict[str, Any] | bool | None, grader: str) -> Callable[[Any], Awaitable[str | None]]:
    """A function giving the first schema error of a value, or None when it is valid (or no schema).

    The schema's patterns are matched under a time bound, off the event loop (bot/engine/patterns.py):
    a pattern that backtracks without bound is the grader's error, never a frozen worker.
    """

    async def no_schema(_value: Any) -> str | None:
        return None

    if schema is None:
        return no_schema
    from jsonschema import Draft202012Validator

    from bot.engine.patterns import BoundedValidator, PatternError, bounded_errors, unbounded_keyword

    Draft202012Validator.check_schema(schema)
    unbounded = unbounded_keyword(schema)
    if unbounded is not None:
        raise ValueError(f"`{unbounded}` beside `patternProperties` is not supported in a {grader} grader")
    validator = BoundedValidator(schema)

    async def first_error(value: Any) -> str | None:
        try:
            errors = await asyncio.to_thread(bounded_errors, validator, value, first_only=True)
        except PatternError as exc:
            raise JudgeError(f"{grader} grader: {exc}") from None
        if not errors:
            return None
        return f"{'/'.join(str(p) for p in errors[0].absolute_path) or '(root)'}: {errors[0].message}"

    return first_error


def is_json(schema: dict[str, Any] | bool | None = None) -> Grader:
    """Pass when the whole answer is JSON (no code fences), valid under `schema` when one is given.

    Args:
        schema: an optional JSON Schema (Draft 2020-12).
    """
    first_error = _schema_validator(schema, "is_json")

    async def grade(sample: Sample) -> Grade:
        try:
            value = json.loads(sample.output)
        except json.JSONDecodeError as exc:
            return Grade("is_json", "accuracy", False, f"not JSON: {exc.msg}")
        error = await first_error(value)
        return Grade("is_json", "accuracy", error is None, error or "")

    return Grader("is_json", "accuracy", grade)


# promptfoo looks at most this far from an opening brace for its closing one.
_JSON_SPAN_MAX = 100_000


def json_objects(text: str) -> list[Any]:
    """The JSON objects found in prose, as promptfoo's `contains-json` finds them: from each `{`, the
    shortest balanced span that parses (an unclosed one closed at the end of the text); YAML flow
    syntax (`{a: 1}`) is accepted as promptfoo's parser accepts it."""
    found: list[Any] = []
    i = 0
    while i < len(text):
        if text[i] != "{":
            i += 1
            continue
        opened, closed, j, stop = 1, 0, i + 1, min(i + _JSON_SPAN_MAX, len(text))
        taken = False
        while j < stop and opened > closed:
            opened += text[j] == "{"
            closed += text[j] == "}"
            j += 1
            if opened == closed or j in (len(text), i + _JSON_SPAN_MAX):
                candidate = text[i:j] + "}" * max(0, opened - closed)
                try:
                    value = yaml.safe_load(candidate)
                except yaml.YAMLError:
                    if opened == closed:
                        break
                    continue
                if isinstance(value, dict | list):
                    found.append(value)
                    i, taken = j, True
                    break
        if not taken:
            i += 1
    return found


def contains_json(schema: dict[str, Any] | bool | None = None) -> Grader:
    """Pass when the answer contains a JSON object (one valid under `schema`, when given).

    Args:
        schema: an optional JSON Schema (Draft 2020-12).
    """
    first_error = _schema_validator(schema, "contains_json")

    async def grade(sample: Sample) -> Grade:
        objects = json_objects(sample.output)
        if not objects:
            return Grade("contains_json", "accuracy", False, "no JSON object in the answer")
        errors = [await first_error(value) for value in objects]
        passed = None in errors
        return Grade("contains_json", "accuracy", passed, "" if passed else str(errors[-1]))

    return Grader("contains_json", "accuracy", grade)


def levenshtein(value: str | None = None, field: str | None = "expected", max_distance: int = 5) -> Grader:
    """Pass when the answer is at most `max_distance` single-character edits from a reference.

    Args:
        value: the reference text (inline).
        field: the row field holding it (when `value` is None).
        max_distance: the most edits that pass (promptfoo's default threshold is 5).
    """
    from rapidfuzz.distance import Levenshtein

    async def grade(sample: Sample) -> Grade:
        reference = str(_value(sample, value, None if value is not None else field))
        # Stopped just past the limit: a long answer far from its reference costs no full matrix.
        distance = Levenshtein.distance(sample.output, reference, score_cutoff=max_distance + 1)
        passed = distance <= max_distance
        reason = "" if passed else f"edit distance over {max_distance}"
        return Grade("levenshtein", "accuracy", passed, reason, score=float(distance) if passed else None)

    return Grader("levenshtein", "accuracy", grade)


def latency(max_ms: float) -> Grader:
    """Pass when the call under test answered within `max_ms` milliseconds.

    Args:
        max_ms: the slowest answer that passes.
    """

    async def grade(sample: Sample) -> Grade:
        if sample.latency_s is None:
            raise JudgeError("no latency was measured for this answer")
        latency_ms = sample.latency_s * 1000
        passed = latency_ms <= max_ms
        return Grade("latency", "accuracy", passed, "" if passed else f"{latency_ms:.0f} ms > {max_ms:g} ms")

    return Grader("latency", "accuracy", grade)


def cost(max_usd: float) -> Grader:
    """Pass when the call under test cost at most `max_usd`.

    Args:
        max_usd: the dearest answer that passes, in US dollars.
    """

    async def grade(sample: Sample) -> Grade:
        if sample.cost_usd is None:
            raise JudgeError("no price is known for this answer's model")
        passed = sample.cost_usd <= max_usd
        return Grade("cost", "accuracy", passed, "" if passed else f"${sample.cost_usd:.2g} > ${max_usd:g}")

    return Grader("cost", "accuracy", grade)


def negate(grader: Grader) -> Grader:
    """Pass when `grader` fails (promptfoo's `not-` forms); a grader that could not judge still cannot.

    Args:
        grader: the grader to invert.
    """
    name = f"not_{grader.name}"

    async def grade(sample: Sample) -> Grade:
        inner = await grader(sample)
        if inner.passed is None:
            return Grade(name, inner.kind, None, inner.reason, error=inner.error)
        passed = not inner.passed
        return Grade(name, inner.kind, passed, "" if passed else f"{grader.name} passed")

    return Grader(name, grader.kind, grade, grader.applies)


def renamed(grader: Grader, name: str, applies: Callable[[Sample], bool] | None = None) -> Grader:
    """`grader` reporting under another name (a promptfoo assertion type), judging only what `applies`."""

    async def grade(sample: Sample) -> Grade:
        inner = await grader(sample)
        return Grade(name, inner.kind, inner.passed, inner.reason, inner.score, inner.scores, inner.error)

    return Grader(name, grader.kind, grade, applies or grader.applies)


# The prompts of promptfoo's model-graded-closedqa and factuality assertions, as promptfoo sends them
# (one system message for closedqa; a system and a user message for factuality).
CLOSED_QA_PROMPT = """You are assessing a submitted answer on a given task based on a criterion. Here is the data:
[BEGIN DATA]
***
[Task]: {input}
***
[Submission]: {completion}
***
[Criterion]: {criteria}
***
[END DATA]
Does the submission meet the criterion? First, write out in a step by step manner your reasoning about \
the criterion to be sure that your conclusion is correct. Avoid simply stating the correct answers at the \
outset. Then print only the single character "Y" or "N" (without quotes or punctuation) on its own line \
corresponding to the correct answer. At the end, repeat just the letter again by itself on a new line.

    Reasoning:"""

FACTUALITY_SYSTEM = """You are a precise factuality evaluator that compares a submitted answer to an expert answer.

Your task is to analyze the factual content while ignoring differences in style, grammar, or punctuation.
You must categorize the submission into one of these options:

(A) The submitted answer is a subset of the expert answer and is fully consistent with it.
(B) The submitted answer is a superset of the expert answer and is fully consistent with it.
(C) The submitted answer contains all the same details as the expert answer.
(D) There is a disagreement between the submitted answer and the expert answer.
(E) The answers differ, but these differences don't matter from the perspective of factuality.

Respond ONLY with a JSON object in this format:
{{
  "category": "[LETTER]",
  "reason": "[DETAILED EXPLANATION]"
}}

- The "category" must be a single letter A, B, C, D, or E.
- Provide a clear, detailed explanation in the "reason" field.
- Your response must be valid JSON with no additional text."""

FACTUALITY_USER = """I need you to compare these answers:

<question>
{input}
</question>

<expert_answer>
{ideal}
</expert_answer>

<submitted_answer>
{completion}
</submitted_answer>

Please analyze the factual relationship between these answers according to the categories you've been given."""


def closed_qa(client: ModelClient, judge_model: str, criteria: str | None = None, field: str | None = None) -> Grader:
    """A judge says whether the answer meets a criterion (promptfoo's model-graded-closedqa): pass
    when its reply ends with "Y".

    Args:
        client: the client for judge calls.
        judge_model: the litellm model name of the judge.
        criteria: the criterion (inline).
        field: the row field holding it (when `criteria` is None).
    """

    async def grade(sample: Sample) -> Grade:
        criterion = str(_value(sample, criteria, field))
        content = CLOSED_QA_PROMPT.format(input=sample.request, completion=sample.output, criteria=criterion)
        messages = [{"role": "system", "content": content}]
        answer = await client.complete(judge_model, messages, temperature=0, max_tokens=JUDGE_MAX_TOKENS)
        verdict = answer.text.rstrip()
        if not verdict.endswith(("Y", "N")):
            raise JudgeError(f"judge gave neither Y nor N: {_clip(answer.text)}")
        passed = verdict.endswith("Y")
        return Grade("closed_qa", "accuracy", passed, _clip(verdict, 300))

    return Grader("closed_qa", "accuracy", grade)


# promptfoo's default factuality scores: only a disagreement (D) fails.
_FACTUALITY_PASSING = frozenset("ABCE")


def factuality(client: ModelClient, judge_model: str, field: str = "expected") -> Grader:
    """A judge compares the answer's facts with a reference answer (promptfoo's factuality): pass
    unless it finds a disagreement.

    Args:
        client: the client for judge calls.
        judge_model: the litellm model name of the judge.
        field: the row field holding the expert answer.
    """

    async def grade(sample: Sample) -> Grade:
        ideal = str(_field(sample, field))
        messages = [
            {"role": "system", "content": FACTUALITY_SYSTEM.format()},
            {
                "role": "user",
                "content": FACTUALITY_USER.format(input=sample.request, ideal=ideal, completion=sample.output),
            },
        ]
        answer = await client.complete(judge_model, messages, temperature=0, max_tokens=JUDGE_MAX_TOKENS)
        category = str(parse_judge_json(answer.text).get("category", "")).strip().upper()
        if len(category) != 1 or category not in "ABCDE":
            raise JudgeError(f"judge gave no category A-E: {_clip(answer.text)}")
        return Grade("factuality", "accuracy", category in _FACTUALITY_PASSING, f"category {category}")

    return Grader("factuality", "accuracy", grade)
