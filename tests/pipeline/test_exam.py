"""The exam is set by the base: a pull request cannot pass the gate by rewriting how it is graded."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from bot.cli import cli
from bot.engine.models import RetryPolicy
from bot.pipeline.render import render_markdown
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM, user_text

N = 30
PRICE = {"input_per_1k": 0.001, "output_per_1k": 0.002}
JUDGE_SCORES = {"strict": lambda right: 10 if right else 2, "lenient": lambda right: 10}


def answers(head_right: range, base_right: range = range(N)) -> Any:
    """Prompt "v2" (head) answers the cases in `head_right` right, "v1" (base) those in `base_right`;
    judge models score the answer: `strict` as it is, `lenient` 10 whatever it says; `broken` fails."""

    def reply(body: dict[str, Any]) -> Reply:
        model = body["model"].removeprefix("openai/")
        if model == "broken":
            return Reply(status=500)
        if model in JUDGE_SCORES:
            score = JUDGE_SCORES[model]("\n\nANSWER:\nnope" not in user_text(body))
            return Reply(text=json.dumps({"scores": {"correctness": {"score": score, "reason": "judged"}}}))
        case = int(user_text(body).rsplit("q", 1)[-1])
        right = case in (head_right if "v2" in body["messages"][0]["content"] else base_right)
        return Reply(text=f"a{case}" if right else "nope", prompt_tokens=100, completion_tokens=50)

    return reply


def rows(n: int = N, **override: Any) -> list[dict[str, Any]]:
    return [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}", **override} for i in range(n)]


def config(graders: list[dict[str, Any]], **policy: Any) -> dict[str, Any]:
    # Latency of a stub in this process is noise: these tests gate on accuracy.
    policy.setdefault("thresholds", {"latency_p95_increase_pct": 1000})
    # The budget check needs a price for every model a run may call.
    policy.setdefault("prices", {f"openai/{m}": PRICE for m in ("stub", "broken", *JUDGE_SCORES)})
    return suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", graders, judge="openai/strict", **policy)


def build(
    repo: GitRepo,
    head_graders: list[dict[str, Any]],
    base_graders: list[dict[str, Any]] | None = None,
    head_rows: list[dict[str, Any]] | None = None,
    head_model: str = "openai/stub",
    **policy: Any,
) -> None:
    """Suite qa on `base` (prompt v1, equals grader unless told), and a `head` that changes the prompt
    to v2 and rewrites the suite's graders (and its rows, when given)."""
    repo.write(".evalbot.yml", config(base_graders or [{"type": "equals"}], **policy))
    repo.write("evals/qa.jsonl", rows())
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    repo.commit("base", tag="base")
    repo.write(".evalbot.yml", config(head_graders, **policy))
    repo.write("evals/qa.jsonl", rows() if head_rows is None else head_rows)
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", model=head_model, system_prompt="v2"))
    repo.commit("head", tag="head")


async def run(repo: GitRepo, stub: StubLLM) -> Report:
    retry = RetryPolicy(max_attempts=1, base_delay_s=0.001)
    return await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url, retry=retry))


def cli_eval(repo: GitRepo, stub: StubLLM, *extra: str) -> Any:
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    return CliRunner().invoke(cli, [*args, "--no-cache", *extra])


def test_a_head_without_graders_is_graded_by_the_base(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, head_graders=[])
    stub.handler = answers(head_right=range(10))

    result = cli_eval(repo, stub)

    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        "## evalbot: ❌ fail\n\n### ⚠️ Evaluation definition changed\n\n"
        "This change rewrites how suites are graded. The gate grades them as the base branch defines it; "
        "the head's definition is run on the same answers and shown beside it.\n\n"
        "- Suite `qa`: grader removed: equals\n"
    )
    assert "| Accuracy | 100.0% [88.6, 100.0] | 33.3% [19.2, 51.2] | -66.7 pp" in result.output
    assert "#### Under the head's definition (shown, not gating): ❌ fail" in result.output
    assert "No evidence under the head's definition: head accuracy cannot be measured: the suite has no accuracy" in (
        result.output
    )


async def test_an_always_passing_head_grader_does_not_pass_the_gate(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, head_graders=[{"type": "regex", "pattern": ""}])
    stub.handler = answers(head_right=range(10))

    report = await run(repo, stub)

    assert report.verdict == "fail" and report.exit_code == 1
    (suite,) = report.suites
    assert (suite.base.metrics.accuracy, suite.head.metrics.accuracy) == (1.0, 10 / 30)
    assert suite.head_definition is not None and suite.head_definition.head.metrics.accuracy == 1.0
    assert suite.head_definition.verdict == "pass"
    (change,) = report.definition_changes
    assert change.changes == ["grader removed: equals", "grader added: regex (pattern: '')"]


async def test_a_head_grader_that_errs_on_every_row_does_not_pass(repo: GitRepo, stub: StubLLM) -> None:
    # `answer` is on no row: every grade of the head's grader is an error, so its accuracy is unknown.
    build(repo, head_graders=[{"type": "equals", "field": "answer"}])
    stub.handler = answers(head_right=range(10))

    report = await run(repo, stub)

    assert report.exit_code == 1
    (suite,) = report.suites
    assert suite.head.metrics.accuracy == 10 / 30 and suite.verdict == "fail"
    assert suite.head_definition is not None
    assert suite.head_definition.no_evidence == [
        "head accuracy cannot be measured: every accuracy grade is an error (row has no `answer`)"
    ]
    assert report.definition_changes[0].changes == ["grader changed: equals → equals (field: 'answer')"]


async def test_rows_whose_every_grade_errs_are_no_evidence(repo: GitRepo, stub: StubLLM) -> None:
    # The head empties `expected` on every row: the base's grader can grade nothing either.
    build(repo, head_graders=[{"type": "equals"}], head_rows=rows(expected=""))
    stub.handler = answers(head_right=range(N))

    report = await run(repo, stub)

    assert report.verdict == "fail" and report.exit_code == 1
    (suite,) = report.suites
    assert suite.no_evidence == [
        "head accuracy cannot be measured: every accuracy grade is an error (row has no `expected`)"
    ]
    assert report.definition_changes == []
    (data,) = report.data
    assert data.changed == [f"c{i}" for i in range(N)] and data.changed_fields["c0"] == ["expected"]
    text = render_markdown(report)
    assert "❌ No evidence: head accuracy cannot be measured: every accuracy grade is an error" in text
    assert "Changed (30): `c0` (expected), `c1` (expected)," in text


async def test_a_head_grader_model_cannot_choose_its_judge(repo: GitRepo, stub: StubLLM) -> None:
    rubric = {"type": "rubric", "criteria": ["correctness"], "pass_score": 7}
    build(repo, base_graders=[rubric], head_graders=[{**rubric, "model": "openai/lenient"}])
    stub.handler = answers(head_right=range(10))

    report = await run(repo, stub)

    assert report.verdict == "fail"
    (suite,) = report.suites
    assert (suite.base.metrics.accuracy, suite.head.metrics.accuracy) == (1.0, 10 / 30)
    assert {r.grades[0].scores["correctness"] for r in suite.head.results} == {10.0, 2.0}
    # The gate's grades come from the base's judge; the lenient one grades only the head's definition.
    # Counted by distinct request: base and head give the same answer on cases 0-9, and whether such a
    # pair is sent twice or shared in flight depends on scheduling. 30 base answers + 20 distinct head ones.
    judged = {(body["model"], user_text(body)) for body in stub.requests if "Criteria:" in user_text(body)}
    assert sorted(model for model, _ in judged) == ["lenient"] * 50 + ["strict"] * 50
    assert suite.head_definition is not None and suite.head_definition.head.metrics.accuracy == 1.0
    assert report.definition_changes[0].changes == [
        "grader changed: rubric (criteria: ['correctness']) → rubric (criteria: ['correctness'], model: "
        "'openai/lenient')"
    ]


async def test_removed_rows_the_head_fails_still_count(repo: GitRepo, stub: StubLLM) -> None:
    # The head prompt gets cases 20-29 wrong, and the change deletes them from the dataset.
    build(repo, head_graders=[{"type": "equals"}], head_rows=rows(20))
    stub.handler = answers(head_right=range(20))

    report = await run(repo, stub)

    assert report.verdict == "fail" and report.exit_code == 1
    (suite,) = report.suites
    assert suite.removed_cases == [f"c{i}" for i in range(20, 30)]
    assert suite.paired_cases == 30 and (suite.base.metrics.accuracy, suite.head.metrics.accuracy) == (1.0, 2 / 3)
    assert [f.case_id for f in suite.regressions] == [f"c{i}" for i in range(20, 30)]
    text = render_markdown(report)
    assert (
        "10 rows this change removes from the dataset were evaluated in their base version and count in the gate"
        in (text)
    )
    assert "Removed (still evaluated, in their base version) (10): `c20`," in text


async def test_a_switch_to_a_model_whose_calls_all_fail_fails(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, head_graders=[{"type": "equals"}], head_model="openai/broken")
    stub.handler = answers(head_right=range(N))

    report = await run(repo, stub)

    (suite,) = report.suites
    assert suite.model_change == ("openai/stub", "openai/broken")
    assert suite.head.metrics.n_errors == N and suite.head.metrics.accuracy is None
    assert suite.no_evidence == ["head accuracy cannot be measured: every call under test failed"]
    assert suite.verdict == "fail" and report.exit_code == 1


def test_fewer_than_min_cases_is_no_evidence(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", config([{"type": "equals"}]))
    repo.write("evals/qa.jsonl", rows(10))
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    repo.commit("head", tag="head")
    stub.handler = answers(head_right=range(10), base_right=range(10))

    result = cli_eval(repo, stub)

    assert result.exit_code == 1, result.output
    assert "❌ No evidence: only 10 paired cases, fewer than `min_cases` (20): too few to judge the change." in (
        result.output
    )
    # The base branch may set a lower minimum: then the same change passes.
    repo.git("checkout", "-q", "base")
    repo.write(
        ".evalbot.yml", config([{"type": "equals"}], thresholds={"latency_p95_increase_pct": 1000, "min_cases": 10})
    )
    repo.commit("ten cases are enough here", tag="base-10")
    args = ["eval", "--repo", str(repo.root), "--base", "base-10", "--head", "head", "--api-base", stub.base_url]
    assert CliRunner().invoke(cli, [*args, "--no-cache"]).exit_code == 0


async def test_an_inconclusive_breach_is_reported_for_the_approval(repo: GitRepo, stub: StubLLM) -> None:
    # 30/30 → 28/30: -6.7 pp, past the 2 pp threshold; two broken cases are not significant (one-sided p = 0.25).
    build(repo, head_graders=[{"type": "equals"}])
    stub.handler = answers(head_right=range(28))

    report = await run(repo, stub)

    assert report.verdict == "pass"
    (breach,) = report.inconclusive
    assert (breach.suite, breach.metric, breach.delta_unit, breach.threshold) == ("qa", "Accuracy", "pp", 2.0)
    assert round(breach.delta, 2) == -6.67 and breach.p_value == 0.25


def test_an_unreadable_base_config_fails_closed(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, head_graders=[{"type": "equals"}])
    repo.git("checkout", "-q", "base")
    (repo.root / ".evalbot.yml").write_text("approvers: [lead\nsuites: []\n")
    repo.commit("broken policy", tag="broken-base")
    stub.handler = answers(head_right=range(N))
    args = ["eval", "--repo", str(repo.root), "--base", "broken-base", "--head", "head", "--api-base", stub.base_url]

    result = CliRunner().invoke(cli, [*args, "--no-cache"])

    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        "## evalbot: ❌ fail\n\nNothing was evaluated: the base branch's .evalbot.yml cannot be read: .evalbot.yml"
    )
    assert "evalbot will not apply a default policy." in result.output
    assert stub.requests == []


def test_a_base_without_config_is_a_first_adoption(repo: GitRepo, stub: StubLLM) -> None:
    repo.write("README.md", "no evalbot yet\n")
    repo.commit("before evalbot", tag="base")
    repo.write(".evalbot.yml", config([{"type": "equals"}]))
    repo.write("evals/qa.jsonl", rows())
    # The default policy has no `prices:`: a model litellm prices passes its budget check.
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", model="openai/gpt-4o-mini", system_prompt="v2"))
    repo.commit("adopt evalbot", tag="head")
    stub.handler = answers(head_right=range(N))

    result = cli_eval(repo, stub)

    assert result.exit_code == 0, result.output
    assert (
        "- the base revision has no .evalbot.yml: the default policy and each suite's own exam apply" in result.output
    )


async def test_the_base_schema_checks_the_rows_however_the_head_edits_it(repo: GitRepo, stub: StubLLM) -> None:
    strict = {"type": "object", "required": ["question", "expected"], "properties": {"expected": {"minLength": 1}}}
    repo.write("evals/qa.schema.yaml", strict)
    base_config = config([{"type": "equals"}])
    base_config["suites"][0]["schema"] = "evals/qa.schema.yaml"
    repo.write(".evalbot.yml", base_config)
    repo.write("evals/qa.jsonl", rows())
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    repo.commit("base", tag="base")
    # The head empties one reference answer and loosens the schema (and its gate) so the row passes.
    repo.write("evals/qa.schema.yaml", {"type": "object"})
    head_config = config([{"type": "equals"}])
    head_config["suites"][0].update(schema="evals/qa.schema.yaml", data_gates={"schema": "off"})
    repo.write(".evalbot.yml", head_config)
    repo.write("evals/qa.jsonl", [*rows(N - 1), {"id": f"c{N - 1}", "question": f"q{N - 1}", "expected": ""}])
    repo.commit("head", tag="head")
    stub.handler = answers(head_right=range(N))

    report = await run(repo, stub)

    (data,) = report.data
    assert [(v.case_id, v.rule) for v in data.schema_violations] == [(f"c{N - 1}", "minLength")]
    assert data.failed and report.verdict == "fail"
    assert report.definition_changes[0].changes == [
        "schema file evals/qa.schema.yaml changed",
        "data gate schema: fail → off",
    ]
