from __future__ import annotations

import json

import pytest

from bot.engine import graders as g
from bot.engine.models import ModelClient, RetryPolicy
from tests.stub_llm import Reply, StubLLM


def sample(output: str, **fields: object) -> g.Sample:
    return g.Sample(output=output, fields=dict(fields), request="Guest request: cancel my booking")


def client(stub: StubLLM) -> ModelClient:
    return ModelClient(api_base=stub.base_url, retry=RetryPolicy(max_attempts=2, base_delay_s=0.001))


@pytest.mark.parametrize(
    ("grader", "output", "fields", "passed"),
    [
        (g.equals(), "  Paris ", {"expected": "Paris"}, True),
        (g.equals(), "paris", {"expected": "Paris"}, False),
        (g.equals(ignore_case=True), "paris", {"expected": "Paris"}, True),
        (g.contains(), "The pool opens at 7:00.", {"expected": "7:00"}, True),
        (g.contains(), "The pool opens at 7:00.", {"expected": ["pool", "22:00"]}, False),
        (g.regex(pattern=r"\b20\s?%"), "We can offer 20 % off", {}, True),
        (g.regex(field="expected"), "Code A-12", {"expected": r"[A-Z]-\d+"}, True),
        (g.json_schema({"type": "object", "required": ["ok"]}), '```json\n{"ok": true}\n```', {}, True),
        (g.json_schema({"type": "object", "required": ["ok"]}), '{"no": 1}', {}, False),
        (g.json_schema({"type": "object"}), "not json", {}, False),
        # A list of acceptable answers (OpenAI evals' `ideal`): any one will do.
        (g.equals(), "Washington", {"expected": ["Washington, D.C.", "Washington"]}, True),
        (g.contains(match="any"), "It is Lima.", {"expected": ["Lima", "Ciudad de los Reyes"]}, True),
        (g.contains(match="any"), "It is Cusco.", {"expected": ["Lima", "Ciudad de los Reyes"]}, False),
        # OpenAI evals' Match: the answer starts with a reference.
        (g.starts_with(), "Paris, of course.", {"expected": "Paris"}, True),
        (g.starts_with(), "It is Paris.", {"expected": "Paris"}, False),
        (g.starts_with(ignore_case=True), "paris.", {"expected": ["Lyon", "Paris"]}, True),
        # OpenAI evals' FuzzyMatch: normalised (case, punctuation, articles), either contains the other.
        (g.fuzzy_match(), "The answer is: the Eiffel Tower!", {"expected": "eiffel tower"}, True),
        (g.fuzzy_match(), "Tower", {"expected": "The Eiffel Tower"}, True),
        (g.fuzzy_match(), "Louvre", {"expected": ["Eiffel Tower", "Notre-Dame"]}, False),
    ],
)
async def test_deterministic_graders(grader: g.Grader, output: str, fields: dict[str, object], passed: bool) -> None:
    grade = await grader(sample(output, **fields))
    assert grade.passed is passed and grade.error is None


async def test_missing_reference_field_is_a_grader_error_not_a_fail() -> None:
    grade = await g.equals()(sample("x"))
    assert grade.passed is None and grade.error == "row has no `expected`"


async def test_rubric_parses_scores_and_applies_pass_score(stub: StubLLM) -> None:
    scores = {"scores": {"correctness": {"score": 9, "reason": "right"}, "tone": {"score": 6, "reason": "curt"}}}
    stub.handler = lambda body: Reply(text="Here you go:\n```json\n" + json.dumps(scores) + "\n```")
    grade = await g.rubric(client(stub), "openai/judge", ["correctness", "tone"], pass_score=7)(sample("ok"))
    assert grade.scores == {"correctness": 9.0, "tone": 6.0}
    assert grade.passed is False and grade.score == 7.5
    assert grade.reason == "correctness: right; tone: curt"
    assert stub.requests[0]["temperature"] == 0


async def test_rubric_shows_the_judge_the_reference_under_its_own_name(stub: StubLLM) -> None:
    stub.handler = lambda body: Reply(text='{"scores": {"correctness": 9}}')
    grade = await g.rubric(client(stub), "openai/judge", ["correctness"], field="ideal")(sample("Paris", ideal="Paris"))
    assert grade.passed is True
    assert "REFERENCE ANSWER:\nParis\n" in stub.requests[0]["messages"][1]["content"]


async def test_unparseable_judge_answer_is_a_judge_error(stub: StubLLM) -> None:
    stub.handler = lambda body: Reply(text="I think it is pretty good, maybe 8/10.")
    grade = await g.rubric(client(stub), "openai/judge", ["correctness"])(sample("ok"))
    assert grade.passed is None
    assert grade.error == "judge answer is not JSON: 'I think it is pretty good, maybe 8/10.'"

    stub.handler = lambda body: Reply(text='{"scores": {"correctness": 14}}')
    grade = await g.rubric(client(stub), "openai/judge2", ["correctness"])(sample("ok"))
    assert grade.error is not None and "no 0-10 score for 'correctness'" in grade.error


async def test_hallucination_judge_evidence_must_be_in_the_context(stub: StubLLM) -> None:
    claims = {
        "claims": [
            {"claim": "refund in 5 days", "supported": True, "evidence": "Refunds take 5 business days"},
            {"claim": "free cancellation", "supported": True, "evidence": "cancellation is always free"},
        ]
    }
    stub.handler = lambda body: Reply(text=json.dumps(claims))
    context = "Cancellation is free up to 24 hours before arrival. Refunds take 5 business days."
    grade = await g.hallucination(client(stub), "openai/judge")(sample("...", context=context))
    # The judge said "supported" for both, but the second quote is not in the context.
    assert grade.passed is False and grade.reason == "unsupported: free cancellation"


async def test_hallucination_overlap_checks_numbers_dates_urls_and_quotes() -> None:
    grader = g.hallucination(method="overlap")
    context = ["The pool is open from 7:00 to 22:00.", "See https://hotel.example/pool"]
    ok = await grader(sample("Open 7:00 to 22:00, see https://hotel.example/pool", context=context))
    assert ok.passed is True
    bad = await grader(sample('Open until 23:00, call "Pool Desk" on 2024-06-01', context=context))
    assert bad.passed is False
    assert bad.reason == "unsupported: 2024-06-01; 23:00; Pool Desk"


async def test_similarity_uses_embeddings_over_http(stub: StubLLM) -> None:
    grader = g.similarity(client(stub), "openai/embed", threshold=0.8)
    same = await grader(sample("the pool opens at seven", expected="the pool opens at seven"))
    other = await grader(sample("dogs are welcome", expected="the pool opens at seven"))
    assert same.passed is True and same.score == pytest.approx(1.0)
    assert other.passed is False and other.score < 0.5
    assert len(stub.embedding_requests) == 2
