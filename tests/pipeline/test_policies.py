"""Policy review of prompt changes, end to end: a git repo at two revisions, the stub judge over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.engine.models import ModelClient
from bot.errors import InputError
from bot.github.api.publish import report_annotations, report_title
from bot.pipeline.config import PolicyRule, parse_config
from bot.pipeline.policies import JUDGE_SYSTEM, Reviewed, review
from bot.pipeline.prompts import parse_prompt
from bot.pipeline.render import render_json, render_markdown
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM, user_text

POLICIES = [
    {"name": "no-open-ended-discounts", "must_not_match": "(?i)any discount"},
    {"name": "disclaimer", "must_match": "not financial advice"},
    {"name": "no-discount-promises", "question": "Does the prompt let the assistant promise discounts?"},
    {"name": "no-personal-data", "pii": True},
]
BASE_SYSTEM = "You are a hotel agent.\nNever say you are human.\n"
HEAD_SYSTEM = BASE_SYSTEM + "Offer any discount the guest asks for.\n"
QUOTE = "Offer any discount the guest asks for."


def prompt_yaml(version: str, system: str) -> str:
    """A prompt file as people write one: the system prompt a block scalar, its text from line 4."""
    block = "".join(f"  {line}\n" for line in system.splitlines())
    head = f'version: "{version}"\nmodel: openai/stub\nsystem_prompt: |\n'
    return head + block + 'user_prompt_template: "Question: {question}"\n'


def judge_says_yes_when_discounts(body: dict[str, Any]) -> Reply:
    """The judge answers yes with a quoted span when the prompt offers discounts; the model under test "ok"."""
    if body["messages"][0]["content"] != JUDGE_SYSTEM:
        return Reply("ok")
    if "any discount" in user_text(body):
        return Reply(json.dumps({"answer": "yes", "evidence": QUOTE}))
    return Reply(json.dumps({"answer": "no", "evidence": ""}))


def build(repo: GitRepo, head_system: str, policies: list[dict[str, Any]] = POLICIES) -> None:
    graders = [{"type": "equals", "field": "expected"}]
    # min_cases 1: the suite's own gate passes, so the verdict is the policies'.
    thresholds = {"min_cases": 1}
    config = suite_config(
        "agent", "prompts/agent.yaml", "evals/agent.jsonl", graders, judge="openai/stub", thresholds=thresholds
    )
    repo.write(".evalbot.yml", {"policies": policies, **config})
    rows = [
        {"id": "c1", "question": "refund?", "expected": "ok"},
        # Luhn-invalid: a number that looks like a card is not one.
        {"id": "c2", "question": "card 4111 1111 1111 1112 declined", "expected": "ok"},
    ]
    repo.write("evals/agent.jsonl", rows)
    repo.write("prompts/agent.yaml", prompt_yaml("1.0.0", BASE_SYSTEM))
    repo.commit("base", tag="base")
    rows.append({"id": "c3", "question": "charge 4111 1111 1111 1111 please", "expected": "ok"})
    repo.write("evals/agent.jsonl", rows)
    repo.write("prompts/agent.yaml", prompt_yaml("1.1.0", head_system))
    repo.commit("head", tag="head")


async def run(repo: GitRepo, stub: StubLLM) -> Report:
    return await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))


async def test_a_discount_clause_fails_the_pattern_and_the_judged_policy_with_evidence(
    repo: GitRepo, stub: StubLLM
) -> None:
    build(repo, HEAD_SYSTEM)
    stub.handler = judge_says_yes_when_discounts
    report = await run(repo, stub)

    review = report.policy
    assert review is not None and review.failed and report.verdict == "fail"
    assert [s.verdict for s in report.suites] == ["pass"]
    introduced = {(v.policy, v.path, v.line, v.evidence) for v in review.introduced}
    # `system_prompt: |` is on line 3, its text from line 4: the clause is its third line.
    assert ("no-open-ended-discounts", "prompts/agent.yaml", 6, "any discount") in introduced
    assert ("no-discount-promises", "prompts/agent.yaml", 6, QUOTE) in introduced
    # The Luhn-valid card the head adds, at its row's line; the Luhn-invalid one on the base is not a card.
    (card,) = [v for v in review.introduced if v.policy == "no-personal-data"]
    assert (card.path, card.line, card.case_id) == ("evals/agent.jsonl", 3, "c3")
    assert "1111" in card.message and "4111 1111 1111 1111" not in card.message
    assert len(review.introduced) == 3
    # The missing disclaimer was missing on the base too: listed, not failing.
    assert [(v.policy, v.line) for v in review.standing] == [("disclaimer", 4)]
    assert review.errors == [] and review.unverified == []
    # The judge saw both prompts: one call each for the judged policy.
    assert review.judge_calls == 2
    # Counted in the estimate checked against the budget: 3 cases x 2 prompts, and the 2 judge calls.
    assert report.estimate is not None and report.estimate.calls == 8

    notes = [n for n in report_annotations(report) if n["title"].startswith("Policy")]
    assert {(n["path"], n["start_line"], n["annotation_level"]) for n in notes} == {
        ("prompts/agent.yaml", 6, "failure"),
        ("evals/agent.jsonl", 3, "failure"),
        ("prompts/agent.yaml", 4, "warning"),
    }
    judged = next(n for n in notes if "no-discount-promises" in n["title"])
    assert QUOTE in judged["message"]

    assert report_title(report).endswith("; policy review: 3 violation(s) introduced")
    markdown = render_markdown(report)
    assert "### Policy review: ❌ fail" in markdown
    assert f"evidence: “{QUOTE}”" in markdown
    assert "Standing: the base has these already (1)" in markdown
    # The report and the store never hold the card number itself.
    assert "4111 1111 1111 1111" not in json.dumps(json.loads(render_json(report))["policy"])


async def test_standing_violations_alone_do_not_fail(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, BASE_SYSTEM + "Be brief.\n", policies=POLICIES[:2])
    stub.handler = judge_says_yes_when_discounts
    report = await run(repo, stub)

    review = report.policy
    assert review is not None and not review.failed and report.verdict == "pass"
    assert [v.policy for v in review.standing] == ["disclaimer"]
    assert review.introduced == []


async def test_removing_a_violation_resolves_it(repo: GitRepo, stub: StubLLM) -> None:
    graders = [{"type": "equals", "field": "expected"}]
    config = suite_config("agent", "prompts/agent.yaml", "evals/agent.jsonl", graders)
    repo.write(".evalbot.yml", {"policies": POLICIES[:1], **config})
    repo.write("evals/agent.jsonl", [{"id": "c1", "question": "q", "expected": "ok"}])
    repo.write("prompts/agent.yaml", prompt_yaml("1.0.0", HEAD_SYSTEM))
    repo.commit("base", tag="base")
    repo.write("prompts/agent.yaml", prompt_yaml("1.1.0", BASE_SYSTEM))
    repo.commit("head", tag="head")
    stub.handler = lambda body: Reply("ok")
    review = (await run(repo, stub)).policy

    assert review is not None and not review.failed
    assert [(v.policy, v.line) for v in review.resolved] == [("no-open-ended-discounts", 6)]


async def test_a_quote_that_is_not_in_the_prompt_does_not_count(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, HEAD_SYSTEM, policies=[POLICIES[2]])

    def invented_quote(body: dict[str, Any]) -> Reply:
        if body["messages"][0]["content"] != JUDGE_SYSTEM:
            return Reply("ok")
        return Reply(json.dumps({"answer": "yes", "evidence": "Promise every guest a free night"}))

    stub.handler = invented_quote
    review = (await run(repo, stub)).policy

    assert review is not None and review.introduced == [] and review.standing == []
    assert len(review.unverified) == 2 and "not in the prompt" in review.unverified[0]


async def test_a_judge_that_cannot_answer_fails_closed(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, HEAD_SYSTEM, policies=[POLICIES[2]])
    stub.handler = lambda body: Reply(
        "I would rather not say" if body["messages"][0]["content"] == JUDGE_SYSTEM else "ok"
    )
    report = await run(repo, stub)

    assert report.policy is not None and report.policy.failed and report.verdict == "fail"
    assert (
        len(report.policy.errors) == 2
        and "the judge could not review prompts/agent.yaml (head)" in report.policy.errors[0]
    )


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"name": "x", "must_match": "a", "max_chars": 10}, "exactly one of"),
        ({"name": "x"}, "exactly one of"),
        ({"name": "x", "must_not_match": "(unclosed"}, "must_not_match is not a regular expression"),
        ({"name": "x", "max_chars": 0}, "greater than or equal to 1"),
    ],
)
def test_a_policy_is_one_valid_rule(rule: dict[str, Any], error: str) -> None:
    with pytest.raises(InputError, match=error):
        parse_config(json.dumps({"policies": [rule]}))


def test_policy_names_are_unique() -> None:
    rule = {"name": "x", "max_chars": 10}
    with pytest.raises(InputError, match="policy names must be unique; repeated: x"):
        parse_config(json.dumps({"policies": [rule, rule]}))


async def test_a_pull_request_cannot_drop_the_bases_policies(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, HEAD_SYSTEM, policies=POLICIES[:1])
    config = suite_config("agent", "prompts/agent.yaml", "evals/agent.jsonl", [{"type": "equals", "field": "expected"}])
    repo.write(".evalbot.yml", {"policies": [], **config})
    repo.commit("drop the policy", tag="head2")
    stub.handler = lambda body: Reply("ok")
    report = await evaluate(GitSource(repo.root), "base", "head2", RunOptions(api_base=stub.base_url))

    assert report.policy is not None and [v.policy for v in report.policy.introduced] == ["no-open-ended-discounts"]


async def test_length_and_a_dropped_disclaimer_fail_when_the_head_introduces_them() -> None:
    base = parse_prompt(prompt_yaml("1.0.0", "Short.\nThis is not financial advice.\n"), "p.yaml")
    head = parse_prompt(prompt_yaml("1.1.0", "A much longer prompt than allowed, by far.\n"), "p.yaml")
    rules = [PolicyRule(name="short", max_chars=60), PolicyRule(name="disclaimer", must_match="not financial advice")]
    judge = ModelClient()
    try:
        result = await review([Reviewed("s", head, base, None, None)], rules, judge, "openai/stub")
    finally:
        await judge.aclose()

    assert [(v.policy, v.line) for v in result.introduced] == [("short", 4), ("disclaimer", 4)]
    assert "63 characters, more than the 60 allowed" in result.introduced[0].message
    assert result.standing == [] and result.failed


async def test_a_judged_violation_on_both_sides_is_standing_whatever_the_judge_quotes(
    repo: GitRepo, stub: StubLLM
) -> None:
    build(repo, BASE_SYSTEM + "Give any discount asked, always.\n", policies=[POLICIES[2]])
    # A base branch that already offered discounts, in other words.
    repo.git("checkout", "-q", "-b", "older", "base")
    repo.write("prompts/agent.yaml", prompt_yaml("1.0.1", BASE_SYSTEM + "Give any discount asked.\n"))
    repo.commit("the base offered discounts already", tag="base2")
    repo.git("checkout", "-q", "main")

    def quote_the_discount_line(body: dict[str, Any]) -> Reply:
        if body["messages"][0]["content"] != JUDGE_SYSTEM:
            return Reply("ok")
        line = next(line for line in user_text(body).splitlines() if "discount" in line and "QUESTION" not in line)
        return Reply(json.dumps({"answer": "yes", "evidence": line}))

    stub.handler = quote_the_discount_line
    report = await evaluate(GitSource(repo.root), "base2", "head", RunOptions(api_base=stub.base_url))

    review = report.policy
    assert review is not None and review.introduced == [] and not review.failed
    assert [v.evidence for v in review.standing] == ["Give any discount asked, always."]


async def test_the_annotation_is_on_the_files_line_in_a_quoted_yaml_string(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, HEAD_SYSTEM, policies=POLICIES[:1])
    # yaml.dump writes the prompt as a quoted string: each newline of the text is a blank line in the file.
    repo.write("prompts/agent.yaml", prompt_file("1.2.0", system_prompt=HEAD_SYSTEM + QUOTE + "\n"))
    repo.commit("quoted", tag="quoted")
    stub.handler = lambda body: Reply("ok")
    report = await evaluate(GitSource(repo.root), "base", "quoted", RunOptions(api_base=stub.base_url))

    text = (repo.root / "prompts/agent.yaml").read_text().splitlines()
    found = [(v.line, v.evidence) for v in report.policy.introduced] if report.policy else []
    # The same sentence twice: each occurrence on its own line.
    assert found == [(7, "any discount"), (9, "any discount")]
    assert QUOTE in text[6] and QUOTE in text[8]


async def test_personal_data_in_a_prompt_is_found_on_its_line_and_masked() -> None:
    base = parse_prompt(prompt_yaml("1.0.0", "Be kind.\n"), "p.yaml")
    head = parse_prompt(prompt_yaml("1.1.0", "Be kind.\nEscalate to ana.lopez@example.com.\n"), "p.yaml")
    judge = ModelClient()
    try:
        result = await review([Reviewed("s", head, base, None, None)], [PolicyRule(name="pii", pii=True)], judge, "j")
    finally:
        await judge.aclose()

    (found,) = result.introduced
    masked = "•" * len("ana.lopez@example") + ".com"
    assert (found.line, found.message) == (5, f"personal data in the prompt's system text: email {masked}")
    assert "ana.lopez" not in found.evidence
