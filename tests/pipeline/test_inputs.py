"""Bad input: each a clear message naming file and line where there is one, and exit code 2."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.errors import InputError
from bot.pipeline.config import parse_config
from bot.pipeline.datasets import parse_dataset
from bot.pipeline.prompts import parse_prompt
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import StubLLM

CONFIG = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])


@pytest.mark.parametrize(
    ("parse", "path", "text", "expected_error"),
    [
        (
            parse_config,
            ".evalbot.yml",
            "suites:\n  - name: a\n    prompt: [unclosed\n",
            ".evalbot.yml:4: YAML syntax error",
        ),
        (
            parse_config,
            ".evalbot.yml",
            "suites:\n  - name: a\n    prompt: p.yaml\n    dataset: d.jsonl\n    gradres: []\n",
            ".evalbot.yml:5: suites.0.gradres: Extra inputs are not permitted",
        ),
        (
            parse_config,
            ".evalbot.yml",
            "suites:\n  - name: a\n    prompt: p\n    dataset: d\n    graders:\n      - {type: regex}\n",
            ".evalbot.yml:6: suites.0.graders.0.regex: Value error, a regex grader takes exactly one of",
        ),
        (
            parse_config,
            ".evalbot.yml",
            "thresholds:\n  accuracy_drop_pp: lots\n",
            ".evalbot.yml:2: thresholds.accuracy_drop_pp",
        ),
        (
            parse_config,
            ".evalbot.yml",
            "suites:\n  - name: a\n    prompt: p\n    dataset: d\n    graders:\n      - {type: regex, pattern: '('}\n",
            ".evalbot.yml:6: suites.0.graders.0.regex: Value error, pattern is not a regular expression",
        ),
        (
            parse_config,
            ".evalbot.yml",
            "suites:\n  - name: a\n    prompt: p\n    dataset: d\n    graders:\n"
            "      - {type: json_schema, schema: {type: 5}}\n",
            ".evalbot.yml:6: suites.0.graders.0.json_schema: Value error, schema is not a valid JSON Schema",
        ),
        (
            parse_dataset,
            "d.jsonl",
            '{"id": 1}\n\n{"id": 2,}\n',
            "d.jsonl:3 (row 2): not valid JSON (Expecting property name enclosed in double quotes at column 10)",
        ),
        (parse_dataset, "d.jsonl", '{"id": 1}\n[1, 2]\n', "d.jsonl:2 (row 2): a row must be an object, not list"),
        (parse_dataset, "d.jsonl", '{"id": 1}\n{"id": 1}\n', "d.jsonl:2 (row 2): case id '1' repeats line 1 (row 1)"),
        (
            parse_dataset,
            "d.json",
            '[\n {"id": 1},\n {"id": 2}\n {"id": 3}\n]',
            "d.json:4 (row 3): not valid JSON (expected ',' or ']'",
        ),
        (parse_dataset, "d.yaml", "- id: 1\n- id: [2\n", "d.yaml:3: YAML syntax error"),
        (parse_dataset, "d.csv", "id,q\n1,a\n2,b,extra\n", "d.csv:3 (row 2): more values than header columns"),
        (parse_dataset, "d.txt", "x", "d.txt: unknown dataset format 'txt'"),
    ],
)
def test_load_errors_name_file_line_and_row(
    parse: Callable[[str, str], object], path: str, text: str, expected_error: str
) -> None:
    with pytest.raises(InputError) as info:
        parse(text, path)
    assert str(info.value).startswith(expected_error)


@pytest.mark.parametrize(
    ("template", "expected_error"),
    [
        ("{x.__class__}", "p.yaml:3: user_prompt_template: placeholder {x.__class__} is not a plain name"),
        ("{x[0]}", "p.yaml:3: user_prompt_template: placeholder {x[0]} is not a plain name"),
        ("{x!r}", "p.yaml:3: user_prompt_template: placeholder {x} has a conversion or format spec"),
        ("{x", "p.yaml:3: user_prompt_template: expected '}' before end of string"),
    ],
)
def test_templates_are_data_never_code(template: str, expected_error: str) -> None:
    text = f'version: "1.0.0"\nmodel: m\nuser_prompt_template: "{template}"\n'
    with pytest.raises(InputError) as info:
        parse_prompt(text, "p.yaml")
    assert str(info.value).startswith(expected_error)


def test_prompt_version_must_be_semver_and_unknown_keys_warn() -> None:
    with pytest.raises(InputError, match=r"p.yaml:1: version '1.2' is not a semantic version"):
        parse_prompt("version: 1.2\nmodel: m\nuser_prompt_template: hi\n", "p.yaml")
    prompt = parse_prompt('version: "1.2.0"\nmodel: m\nuser_prompt_template: hi\nowner: team-a\n', "p.yaml")
    assert prompt.warnings == ("p.yaml: unknown key `owner` (kept, not used)",)
    assert prompt.content["owner"] == "team-a"  # kept: a change to it is a change to the prompt


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("d.jsonl", '{"id": "a", "q": "x"}\n{"id": "b", "q": "y"}\n'),
        ("d.json", '[{"id": "a", "q": "x"},\n {"id": "b", "q": "y"}]'),
        ("d.yaml", "- {id: a, q: x}\n- id: b\n  q: y\n"),
        ("d.csv", "id,q\na,x\nb,y\n"),
    ],
)
def test_every_format_gives_the_same_cases(path: str, text: str) -> None:
    dataset = parse_dataset(text, path)
    assert [(c.id, c.fields["q"]) for c in dataset.cases] == [("a", "x"), ("b", "y")]
    assert [c.row for c in dataset.cases] == [1, 2]
    assert dataset.cases[1].line == (2 if path != "d.csv" else 3)


def test_row_without_id_gets_a_stable_hash() -> None:
    one = parse_dataset('{"q": "x", "a": 1}\n', "d.jsonl").cases[0]
    two = parse_dataset('{"a": 1, "q": "x"}\n', "d.jsonl").cases[0]
    assert one.id == two.id and len(one.id) == 12


def _repo_with(repo: GitRepo, dataset: str, template: str = "Question: {question}") -> None:
    repo.write(".evalbot.yml", CONFIG)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", user_prompt_template=template))
    repo.write("evals/qa.jsonl", '{"id": "a", "question": "q"}\n')
    repo.commit("base", tag="base")
    repo.write("evals/qa.jsonl", dataset)
    repo.commit("head", tag="head")


def _eval(repo: GitRepo, stub: StubLLM, *extra: str) -> tuple[int, str]:
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    result = CliRunner().invoke(cli, [*args, *extra])
    return result.exit_code, result.output


def test_cli_exit_2_for_a_dataset_line_that_is_not_json(repo: GitRepo, stub: StubLLM) -> None:
    _repo_with(repo, '{"id": "a", "question": "q"}\n{"id": "b", "question": \n')
    code, output = _eval(repo, stub)
    assert code == 2
    assert "evals/qa.jsonl:2 (row 2): not valid JSON" in output
    assert stub.requests == []


def test_cli_exit_2_for_a_missing_placeholder(repo: GitRepo, stub: StubLLM) -> None:
    _repo_with(repo, '{"id": "a", "question": "q"}\n{"id": "b", "text": "no question"}\n')
    code, output = _eval(repo, stub)
    assert code == 2
    assert (
        "evals/qa.jsonl:2 (row 2): the head prompt cannot be rendered for row 'b': the row has no field "
        "\\`question\\` (prompts/qa.yaml:4)" in output
    )
    assert stub.requests == []


def test_cli_exit_2_for_unknown_suite_and_bad_ref(repo: GitRepo, stub: StubLLM) -> None:
    _repo_with(repo, '{"id": "a", "question": "q"}\n')
    code, output = _eval(repo, stub, "--suite", "nope")
    assert (code, output.strip()) == (2, "error: .evalbot.yml: unknown suite 'nope' (suites: qa)")
    result = CliRunner().invoke(cli, ["eval", "--repo", str(repo.root), "--base", "no-such-ref"])
    assert result.exit_code == 2 and "'no-such-ref' is not a commit" in result.output


def test_prompt_changed_without_version_bump_fails_the_gate(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", CONFIG)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", '{"id": "a", "question": "q", "expected": "ok"}\n')
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", temperature=0.7))
    repo.commit("head", tag="head")
    code, output = _eval(repo, stub)
    assert code == 1
    assert (
        "prompts/qa.yaml changed without a version bump: version 1.0.0 must be higher than the base's 1.0.0" in output
    )


def test_validate_checks_a_checkout_without_model_calls(repo: GitRepo) -> None:
    _repo_with(repo, '{"id": "a", "question": "q"}\n')
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    # Valid, and certain to fail the gate (one case, fewer than min_cases): exit 1, with the reason.
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "ok: suite qa: prompts/qa.yaml v1.0.0, 1 cases in evals/qa.jsonl",
        "fail: suite qa has 1 cases, fewer than `thresholds.min_cases` (20): too few to decide anything, so its "
        "gate cannot pass",
    ]
    (repo.root / "prompts/qa.yaml").write_text('version: "1.0.0"\nmodel: m\nuser_prompt_template: "{q.x}"\n')
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert result.exit_code == 2
    assert "error: prompts/qa.yaml:3: user_prompt_template: placeholder {q.x} is not a plain name" in result.output


def test_unchanged_suite_is_not_evaluated(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", CONFIG)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", '{"id": "a", "question": "q"}\n')
    repo.commit("base", tag="base")
    repo.write("README.md", "docs only")
    repo.commit("head", tag="head")
    code, output = _eval(repo, stub)
    assert code == 0 and "nothing to evaluate" in output and stub.requests == []


def test_removing_a_suite_needs_an_approval(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", CONFIG)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", '{"id": "a", "question": "q"}\n')
    repo.commit("base", tag="base")
    # The prompt changes without a bump, and its suite disappears so that nothing evaluates it.
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", temperature=0.9))
    repo.write(".evalbot.yml", {"suites": []})
    repo.commit("head", tag="head")
    code, output = _eval(repo, stub)
    assert code == 1 and stub.requests == []
    assert "suite qa of the base's .evalbot.yml is gone in this change" in output
