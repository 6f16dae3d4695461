"""What a suite entry resolves to (bot/pipeline/suites.py) and the no-silent-false-pass rules around it:
render errors at their row, templates that read no row field, unused fields, identical requests counted
once, chat lists sent as messages, the working tree evaluated, a promptfoo suite refused until read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.errors import InputError
from bot.pipeline.changes import plan
from bot.pipeline.config import parse_config
from bot.pipeline.run import RunOptions, evaluate
from bot.pipeline.source import GitSource
from bot.pipeline.suites import parse_prompt_file
from tests.conftest import STUB_PRICES, GitRepo, prompt_file
from tests.stub_llm import Reply, StubLLM, user_text


def suite(**entry: Any) -> dict[str, Any]:
    base = {"name": "qa", "prompt": "prompts/qa.yaml", "dataset": "evals/qa.jsonl", "graders": [{"type": "equals"}]}
    return {"prices": STUB_PRICES, "suites": [{**base, **entry}]}


def questions(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}", **extra} for i in range(n)]


def answer_q(body: dict[str, Any]) -> Reply:
    return Reply(text="a" + user_text(body).rsplit("q", 1)[-1])


async def run(repo: GitRepo, stub: StubLLM, base: str = "base", head: str = "head") -> Any:
    return await evaluate(GitSource(repo.root), base, head, RunOptions(api_base=stub.base_url))


async def test_identical_requests_are_sent_and_counted_once(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", suite())
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    rows = questions(24)
    for i in range(20, 24):  # four rows repeat the questions of rows 0-3 (a copy-paste under new ids)
        rows[i] = {**rows[i - 20], "id": f"c{i}"}
    repo.write("evals/qa.jsonl", rows)
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="Be exact."))
    repo.commit("head", tag="head")
    stub.handler = answer_q

    report = await run(repo, stub)
    (result,) = report.suites
    assert (result.head.metrics.n_cases, result.base.metrics.n_cases, result.paired_cases) == (20, 20, 20)
    assert len(stub.requests) == 40
    assert (
        "evals/qa.jsonl: 4 rows send the same request as an earlier row (c20 = c0, c21 = c1, c22 = c2, c23 = c3): "
        "each request is evaluated and counted once" in report.warnings
    )


async def test_a_template_reading_no_row_field_is_an_error_unless_static(repo: GitRepo, stub: StubLLM) -> None:
    # `{{question}}` in an fstring template is a literal: 24 rows would be one request, 24 times.
    repo.write(".evalbot.yml", suite())
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", user_prompt_template="Question: {{question}}"))
    repo.write("evals/qa.jsonl", questions(24))
    repo.commit("base", tag="base")
    report = await run(repo, stub, "base", "base")
    assert report.errors == []  # nothing changed between base and itself
    the_plan = await plan(GitSource(repo.root), "base", "base", run_all=True)
    (error,) = the_plan.errors
    assert (error.path, error.message) == (
        "prompts/qa.yaml",
        "the prompt uses no variable and no field of the rows (expected, id, question), so all 24 rows would send "
        "the same request: write the fields as its template format does, or set `static: true` on the suite if "
        "that is meant",
    )
    repo.write(".evalbot.yml", suite(static=True))
    repo.commit("static")
    the_plan = await plan(GitSource(repo.root), "HEAD", "HEAD", run_all=True)
    assert the_plan.errors == []
    (sp,) = the_plan.suites
    assert len(sp.evaluated_cases) == 1  # one request, one sample


async def test_a_row_a_template_cannot_render_is_named_by_dataset_and_template_line(repo: GitRepo) -> None:
    prompt = 'version: "1.0.0"\nmodel: openai/stub\ntemplate_format: jinja2\nuser_prompt_template: |\n'
    repo.write(".evalbot.yml", suite())
    repo.write("prompts/qa.yaml", prompt + "  Question: {{ question }}\n  Size: {{ details.size }}\n")
    rows = questions(3, details={"size": 1})
    del rows[1]["details"]
    repo.write("evals/qa.jsonl", rows)
    repo.commit("base", tag="base")
    the_plan = await plan(GitSource(repo.root), "base", "base", run_all=True)
    (error,) = the_plan.errors
    # The template's text is on lines 5-6 of the file; the failing line is the second.
    assert str(error) == (
        "evals/qa.jsonl:2 (row 2): the prompt cannot be rendered for row 'c1': 'details' is undefined "
        "(the row has no such field) (prompts/qa.yaml:6)"
    )


async def test_a_hostile_template_is_stopped_at_its_first_row(repo: GitRepo) -> None:
    loops = "{% for i in range(9999) %}{% for j in range(9999) %}{% for k in range(9999) %}"
    template = loops + "{% endfor %}{% endfor %}{% endfor %}{{ question }}"
    repo.write(".evalbot.yml", suite())
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", template_format="jinja2", user_prompt_template=template))
    repo.write("evals/qa.jsonl", questions(500))
    repo.commit("base", tag="base")
    the_plan = await plan(GitSource(repo.root), "base", "base", run_all=True)
    (error,) = the_plan.errors
    assert str(error).startswith(
        "evals/qa.jsonl:1 (row 1): the prompt cannot be rendered for row 'c0': the template takes more than"
    )


async def test_unused_fields_are_listed_and_expected_field_names_the_reference(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", suite(expected_field="ideal", graders=[{"type": "equals", "ignore_case": True}]))
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write(
        "evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "ideal": f"A{i}", "source": "wiki"} for i in range(20)]
    )
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="Be exact."))
    repo.commit("head", tag="head")
    stub.handler = answer_q
    report = await run(repo, stub)
    assert report.suites[0].head.metrics.accuracy == 1.0  # graded against `ideal`, case-insensitively
    assert "evals/qa.jsonl: fields no prompt or grader of suite qa reads: source" in report.warnings


async def test_a_row_field_holding_a_chat_is_sent_as_messages(repo: GitRepo, stub: StubLLM) -> None:
    chat = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "q7"}]
    repo.write(".evalbot.yml", suite())
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", user_prompt_template="{conversation}"))
    repo.write("evals/qa.jsonl", [{"id": "c7", "conversation": chat, "expected": "a7"}])
    repo.commit("base", tag="base")
    the_plan = await plan(GitSource(repo.root), "base", "base", run_all=True)
    (sp,) = the_plan.suites
    assert sp.head_requests["c7"] == [{"role": "system", "content": "You are a helpful agent."}, *chat]


async def test_a_promptfoo_suite_is_read_by_its_reader_which_names_what_is_wrong(repo: GitRepo) -> None:
    repo.write(".evalbot.yml", {"suites": [{"name": "pf", "promptfoo": "evals/promptfooconfig.yaml"}]})
    repo.write("evals/promptfooconfig.yaml", "prompts: [hi]\n")
    repo.commit("base", tag="base")
    the_plan = await plan(GitSource(repo.root), "base", "base", run_all=True)
    assert [str(e) for e in the_plan.errors] == ["evals/promptfooconfig.yaml:1: no `providers:`"]


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (
            {"promptfoo": "p.yaml", "prompt": "x.yaml"},
            "a promptfoo suite takes its prompts, tests and providers from that file: drop prompt",
        ),
        ({"prompt": None}, "a suite without `prompt` sends each row's `input` as it is, and needs `model`"),
        ({"dataset": None}, "a suite needs `dataset` (or `promptfoo`)"),
        ({"watch": ["/etc/passwd"]}, "'/etc/passwd' must be a path inside the repository"),
        ({"template_format": "nunjucks"}, "template_format: Input should be 'fstring', 'jinja2' or 'mustache'"),
    ],
)
def test_suite_entries_that_cannot_run_are_refused(entry: dict[str, Any], error: str) -> None:
    config = suite(**entry)
    config["suites"][0] = {k: v for k, v in config["suites"][0].items() if v is not None}
    import yaml

    with pytest.raises(InputError) as info:
        parse_config(yaml.safe_dump(config))
    assert error in str(info.value)


def test_prompt_files_are_read_by_their_format() -> None:
    langchain = "_type: prompt\ninput_variables: [q]\ntemplate: 'Q: {q}'\n"
    assert parse_prompt_file(langchain, "p.yaml", None, "openai/m").render({"q": "x"}) == [
        {"role": "user", "content": "Q: x"}
    ]
    mustache = "_type: prompt\ninput_variables: [q]\ntemplate: 'Q: {{q}}'\ntemplate_format: mustache\n"
    assert parse_prompt_file(mustache, "p.yaml", None, "openai/m").render({"q": "<x>"}) == [
        {"role": "user", "content": "Q: &lt;x&gt;"}
    ]
    with pytest.raises(InputError, match=r"p.yaml:1: LangChain `_type: few_shot` files are not read"):
        parse_prompt_file("_type: few_shot\nexamples: []\n", "p.yaml", None, "openai/m")
    with pytest.raises(InputError, match=r"p.yaml:2: `template_path` is not read: put the template in this file"):
        parse_prompt_file("_type: prompt\ntemplate_path: prompt.txt\n", "p.yaml", None, "openai/m")
    langchain_json = '{"_type": "prompt", "input_variables": ["q"], "template": "Q: {q}"}'
    assert parse_prompt_file(langchain_json, "p.json", None, "openai/m").variables == ("q",)
    with pytest.raises(InputError, match=r"the template uses q, not in `input_variables`"):
        parse_prompt_file('{"_type": "prompt", "input_variables": [], "template": "Q: {q}"}', "p.json", None, "m/m")
    with pytest.raises(InputError, match=r"a plain-text prompt carries no model: set `model:` on its suite"):
        parse_prompt_file("Q: {q}", "p.txt", None, None)
    configuration = "  configuration:\n    type: azure_openai\n    azure_deployment: ${env:DEPLOYMENT}\n"
    prompty = f"---\nmodel:\n{configuration}---\nuser:\n{{{{q}}}}\n"
    with pytest.raises(InputError, match=r"p.prompty:4: the model configuration \(azure_openai\) names no model"):
        parse_prompt_file(prompty, "p.prompty", None, None)
    assert parse_prompt_file(prompty, "p.prompty", None, "azure/prod").model == "azure/prod"
    with pytest.raises(InputError, match=r"p.prompty:9: user section: \{% include %\} is not supported"):
        parse_prompt_file(prompty.replace("{{q}}", "{{q}}\n{% include 'x' %}"), "p.prompty", None, "openai/m")


async def test_a_suite_without_prompt_compares_the_model_change_on_the_rows(repo: GitRepo, stub: StubLLM) -> None:
    prices = {**STUB_PRICES, "openai/stub-2": STUB_PRICES["openai/stub"]}
    entry = {"name": "capitals", "dataset": "evals/samples.jsonl", "model": "openai/stub"}
    entry["graders"] = [{"type": "starts_with"}]
    entry["expected_field"] = "ideal"
    chat = [{"role": "system", "content": "City only."}]
    samples = [{"input": [*chat, {"role": "user", "content": f"q{i}"}], "ideal": f"a{i}"} for i in range(20)]
    repo.write(".evalbot.yml", {"prices": prices, "suites": [entry]})
    repo.write("evals/samples.jsonl", samples)
    repo.commit("base", tag="base")
    repo.write(".evalbot.yml", {"prices": prices, "suites": [{**entry, "model": "openai/stub-2"}]})
    repo.commit("head", tag="head")
    stub.handler = answer_q
    report = await run(repo, stub)
    (result,) = report.suites
    assert result.reasons == ["its entry in .evalbot.yml changed"]
    assert result.model_change == ("openai/stub", "openai/stub-2")
    assert {r["model"] for r in stub.requests} == {"stub", "stub-2"}
    assert result.head.metrics.accuracy == 1.0


def test_eval_without_head_reads_the_working_tree_and_names_uncommitted_files(repo: GitRepo, stub: StubLLM) -> None:
    # The stub's latency is this machine's load: the exit code here is about what was read, not speed.
    repo.write(".evalbot.yml", {**suite(), "thresholds": {"latency_p95_increase_pct": 1000}})
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", questions(20))
    repo.commit("base", tag="base")
    # Edited, not committed: `eval --base base` must see it (it used to say "nothing to evaluate").
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="Be exact."))
    stub.handler = answer_q
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--api-base", stub.base_url, "--format", "json"]
    result = CliRunner().invoke(cli, args)
    data = json.loads(result.output)
    assert data["head_ref"] == "working tree"
    assert [s["reasons"] for s in data["suites"]] == [["prompts/qa.yaml changed"]]
    assert "evaluated the working tree: uncommitted files read: prompts/qa.yaml" in data["warnings"]
    assert result.exit_code == 0


def test_validate_exits_1_for_a_config_without_suites(repo: GitRepo) -> None:
    repo.write(".evalbot.yml", {"suites": []})
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert (result.exit_code, result.output) == (
        1,
        "fail: .evalbot.yml has no suite: there is nothing to evaluate, so nothing can pass\n",
    )
