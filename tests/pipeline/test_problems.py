"""Every problem at once: one bad file does not hide another's, one broken suite does not stop the others."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.errors import InputError, InputErrors
from bot.pipeline.datasets import MAX_ROW_ERRORS, parse_dataset
from tests.conftest import STUB_PRICES, GitRepo, prompt_file
from tests.stub_llm import StubLLM

CONFIG = {
    "prices": STUB_PRICES,
    "suites": [
        {"name": "qa", "prompt": "prompts/qa.yaml", "dataset": "evals/qa.jsonl", "graders": [{"type": "equals"}]},
        {
            "name": "other",
            "prompt": "prompts/other.yaml",
            "dataset": "evals/other.jsonl",
            "schema": "evals/other.schema.yaml",
            "graders": [{"type": "equals"}],
        },
    ],
}
SCHEMA = "type: object\nrequired: [id, question]\nproperties:\n  question: {type: string, minLength: 5}\n"
# A YAML syntax error on line 3 (a second `: ` in a plain scalar).
BROKEN_PROMPT = 'version: "1.0.1"\nmodel: openai/stub\nuser_prompt_template: Question: {question}\n'


def good_rows(n: int, prefix: str = "q") -> list[str]:
    return [json.dumps({"id": f"{prefix}{i}", "question": f"question {i}", "expected": "ok"}) for i in range(n)]


def broken_dataset() -> str:
    """Twelve lines, lines 7 and 12 not JSON."""
    lines = good_rows(12)
    lines[6] = '{"id": "q6", "question": '
    lines[11] = "not json at all"
    return "\n".join(lines) + "\n"


def write_base(repo: GitRepo) -> None:
    repo.write(".evalbot.yml", CONFIG)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("prompts/other.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", "\n".join(good_rows(12)) + "\n")
    repo.write("evals/other.jsonl", "\n".join(good_rows(3, "o")) + "\n")
    repo.write("evals/other.schema.yaml", SCHEMA)


def write_broken_head(repo: GitRepo) -> None:
    """A broken prompt (line 3), a dataset with bad lines 7 and 12, and another suite's schema violation (line 2)."""
    repo.write("prompts/qa.yaml", BROKEN_PROMPT)
    repo.write("evals/qa.jsonl", broken_dataset())
    other = good_rows(3, "o")
    other[1] = json.dumps({"id": "o1", "question": "hm", "expected": "ok"})
    repo.write("evals/other.jsonl", "\n".join(other) + "\n")


ERRORS = [
    "evals/qa.jsonl:7 (row 7): not valid JSON (Expecting value at column 26)",
    "evals/qa.jsonl:12 (row 12): not valid JSON (Expecting value at column 1)",
    "prompts/qa.yaml:3: YAML syntax error: mapping values are not allowed here",
]


def test_validate_lists_every_problem_sorted_by_file_and_line(repo: GitRepo) -> None:
    write_base(repo)
    write_broken_head(repo)
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert result.exit_code == 2
    errors = [line.removeprefix("error: ") for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors == ERRORS
    # The other suite is still validated: its schema violation is listed with its line.
    assert "ok: suite other: prompts/other.yaml v1.0.0, 3 cases in evals/other.jsonl" in result.output
    assert "  evals/other.jsonl:2 (case o1) question: minLength: 'hm' is too short" in result.output


def test_eval_lists_every_problem_and_exits_2_without_calling_a_model(repo: GitRepo, stub: StubLLM) -> None:
    write_base(repo)
    repo.commit("base", tag="base")
    write_broken_head(repo)
    repo.commit("head", tag="head")
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    listed = [line.removeprefix("- ") for line in result.output.splitlines() if line.startswith("- ")]
    assert listed[:3] == ERRORS
    assert "| 2 | `o1` | `question` | minLength |" in result.output
    assert stub.requests == []


def test_a_prompt_that_cannot_be_read_does_not_hide_a_missing_placeholder_elsewhere(repo: GitRepo) -> None:
    repo.write(".evalbot.yml", CONFIG)
    repo.write("prompts/qa.yaml", BROKEN_PROMPT)
    repo.write("evals/qa.jsonl", "\n".join(good_rows(2)) + "\n")
    repo.write("prompts/other.yaml", prompt_file("1.0.0"))
    repo.write("evals/other.jsonl", '{"id": "o0", "text": "no question"}\n')
    repo.write("evals/other.schema.yaml", SCHEMA)
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: evals/other.jsonl:1 (row 1): the prompt cannot be rendered for row 'o0': the row has no field "
        "`question` (prompts/other.yaml:4)",
        "error: prompts/qa.yaml:3: YAML syntax error: mapping values are not allowed here",
    ]


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        (
            "d.jsonl",
            '{"id": "a"}\n[1]\n{"id": "a"}\n{"id": \n',
            [
                "d.jsonl:2 (row 2): a row must be an object, not list",
                "d.jsonl:3 (row 3): case id 'a' repeats line 1 (row 1)",
                "d.jsonl:4 (row 4): not valid JSON (Expecting value at column 8)",
            ],
        ),
        (
            "d.csv",
            "id,question\na,q\nb,q,extra\nc\nd,q\n",
            ["d.csv:3 (row 2): more values than header columns", "d.csv:4 (row 3): fewer values than header columns"],
        ),
    ],
)
def test_every_bad_row_of_a_dataset_is_listed(path: str, text: str, expected: list[str]) -> None:
    with pytest.raises(InputErrors) as caught:
        parse_dataset(text, path)
    assert [str(e) for e in caught.value.errors] == expected
    assert isinstance(caught.value, InputError)


def test_bad_rows_past_the_cap_stop_the_file() -> None:
    text = "x\n" * (MAX_ROW_ERRORS + 10)
    with pytest.raises(InputErrors) as caught:
        parse_dataset(text, "d.jsonl")
    assert len(caught.value.errors) == MAX_ROW_ERRORS + 1
    assert (
        str(caught.value.errors[-1])
        == f"d.jsonl:{MAX_ROW_ERRORS + 1}: more than {MAX_ROW_ERRORS} rows cannot be read: stopped here"
    )
