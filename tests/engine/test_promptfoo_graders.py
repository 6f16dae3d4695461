"""Graders with promptfoo's semantics: each case is what promptfoo 0.121 answers for the same input."""

from __future__ import annotations

import json

import pytest

from bot.engine import graders as g
from bot.engine.models import ModelClient, RetryPolicy
from tests.stub_llm import Reply, StubLLM


def sample(output: str, latency_s: float | None = None, cost_usd: float | None = None, **fields: object) -> g.Sample:
    return g.Sample(output, dict(fields), "What is the capital of France?", latency_s, cost_usd)


def client(stub: StubLLM) -> ModelClient:
    return ModelClient(api_base=stub.base_url, retry=RetryPolicy(max_attempts=2, base_delay_s=0.001))


@pytest.mark.parametrize(
    ("grader", "output", "passed"),
    [
        # contains is case-sensitive and does not fold white space; icontains lower-cases both.
        (g.contains_texts(["Paris"]), "It is Paris.", True),
        (g.contains_texts(["paris"]), "It is Paris.", False),
        (g.contains_texts(["is  Paris"]), "It is Paris.", False),
        (g.contains_texts(["paris"], ignore_case=True), "It is PARIS.", True),
        (g.contains_texts("Paris, Lyon", mode="any"), "Lyon it is", True),
        (g.contains_texts("Paris, Lyon", mode="all"), "Lyon it is", False),
        (g.contains_texts('"Paris, France", Lyon', mode="all"), "Lyon, not Paris, France", True),
        (g.contains_texts(["PARIS", "lyon"], mode="all", ignore_case=True), "paris and Lyon", True),
        # starts-with keeps leading white space.
        (g.starts_with_text("Paris"), "Paris is the capital", True),
        (g.starts_with_text("Paris"), " Paris is the capital", False),
        # equals (exact): no trimming; an object reference compares the answer parsed as JSON.
        (g.equals_exact("Paris"), "Paris", True),
        (g.equals_exact("Paris"), "Paris ", False),
        (g.equals_exact(field="expected"), "Paris", True),
        # is-json: the whole answer, no code fences.
        (g.is_json(), '{"city": "Paris"}', True),
        (g.is_json(), '```json\n{"city": "Paris"}\n```', False),
        (g.is_json({"type": "object", "required": ["city"]}), '{"town": "Paris"}', False),
        # contains-json: an object anywhere in prose, YAML flow syntax accepted, an unclosed one closed.
        (g.contains_json(), 'Sure: {"city": "Paris"} done', True),
        (g.contains_json(), "Sure: {city: Paris} done", True),
        (g.contains_json(), 'Sure: {"city": "Paris"', True),
        (g.contains_json(), "no json here", False),
        (g.contains_json({"type": "object", "required": ["city"]}), '{"a": 1} then {"city": "Paris"}', True),
        (g.contains_json({"type": "object", "required": ["city"]}), '{"a": 1}', False),
        # levenshtein: at most `max_distance` edits (promptfoo's default 5).
        (g.levenshtein("Paris", None), "Pariss", True),
        (g.levenshtein("Paris", None, max_distance=0), "Pariss", False),
        (g.levenshtein("Paris", None), "The capital is Paris", False),
    ],
)
async def test_string_graders_follow_promptfoo(grader: g.Grader, output: str, passed: bool) -> None:
    grade = await grader(sample(output, expected="Paris"))
    assert grade.passed is passed and grade.error is None


async def test_equals_exact_compares_an_object_reference_as_json() -> None:
    grader = g.equals_exact(field="expected")
    assert (await grader(sample('{"b": 2, "a": 1}', expected={"a": 1, "b": 2}))).passed is True
    assert (await grader(sample("a: 1", expected={"a": 1}))).passed is False


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        ('"x, y", z', ["x, y", "z"]),
        ('"say ""hi""", \\"', ['say "hi"', '\\"']),
        ("a,,b,", ["a", "b"]),
    ],
)
def test_split_values_reads_commas_as_promptfoo(text: str, values: list[str]) -> None:
    assert g.split_values(text) == values


def test_split_values_refuses_an_unterminated_quote() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        g.split_values('"open, b')


async def test_latency_and_cost_use_the_calls_measurements() -> None:
    assert (await g.latency(500)(sample("x", latency_s=0.4))).passed is True
    assert (await g.latency(500)(sample("x", latency_s=0.6))).passed is False
    assert (await g.cost(0.001)(sample("x", cost_usd=0.0009))).passed is True
    assert (await g.cost(0.001)(sample("x", cost_usd=0.002))).passed is False
    unmeasured = await g.cost(0.001)(sample("x"))
    assert unmeasured.passed is None and unmeasured.error == "no price is known for this answer's model"


async def test_negate_inverts_a_verdict_but_not_an_error() -> None:
    assert (await g.negate(g.contains_texts(["sorry"], ignore_case=True))(sample("Sorry, no"))).passed is False
    grade = await g.negate(g.contains_texts(["sorry"]))(sample("Paris"))
    assert grade.passed is True and grade.grader == "not_contains_all"
    unknown = await g.negate(g.latency(100))(sample("x"))
    assert unknown.passed is None and unknown.error == "no latency was measured for this answer"


async def test_closed_qa_sends_promptfoos_prompt_and_reads_the_last_letter(stub: StubLLM) -> None:
    stub.handler = lambda body: Reply(text="The answer names Paris.\nY\nY")
    grade = await g.closed_qa(client(stub), "openai/judge", "names the capital")(sample("Paris"))
    assert grade.passed is True
    sent = stub.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system"]
    assert (
        "[Task]: What is the capital of France?\n***\n[Submission]: Paris\n***\n[Criterion]: names the capital"
        in (sent[0]["content"])
    )
    stub.handler = lambda body: Reply(text="No.\nN")
    assert (await g.closed_qa(client(stub), "openai/judge", "x")(sample("Lyon"))).passed is False
    stub.handler = lambda body: Reply(text="maybe")
    assert (await g.closed_qa(client(stub), "openai/judge", "x")(sample("Lyon"))).passed is None


@pytest.mark.parametrize(("category", "passed"), [("A", True), ("B", True), ("C", True), ("D", False), ("E", True)])
async def test_factuality_fails_only_a_disagreement(stub: StubLLM, category: str, passed: bool) -> None:
    stub.handler = lambda body: Reply(text=json.dumps({"category": category, "reason": "r"}))
    grade = await g.factuality(client(stub), "openai/judge")(sample("Paris", expected="Paris, France"))
    assert grade.passed is passed
    user = stub.requests[0]["messages"][1]["content"]
    assert "<expert_answer>\nParis, France\n</expert_answer>" in user
    assert "<submitted_answer>\nParis\n</submitted_answer>" in user


async def test_a_grader_that_does_not_apply_to_a_row_gives_no_grade(stub: StubLLM) -> None:
    from bot.engine.runner import CaseInput, VariantSpec, run_variant

    stub.handler = lambda body: Reply(text="Paris")
    only_b = g.renamed(g.contains_texts(["Lyon"]), "contains", lambda s: s.fields.get("q") == "b")
    cases = [CaseInput(q, None, {"q": q}, [{"role": "user", "content": q}]) for q in ("a", "b")]
    results = await run_variant(client(stub), VariantSpec("head", "openai/stub"), cases, [only_b])
    assert [len(r.grades) for r in results] == [0, 1]
    assert results[1].grades[0].grader == "contains" and results[1].grades[0].passed is False
