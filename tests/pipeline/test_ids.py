"""Case ids people know: a suite's `id_field` names regressions, fixes and data findings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.errors import InputError
from bot.pipeline.config import DataGates
from bot.pipeline.data_quality import check
from bot.pipeline.datasets import parse_dataset
from bot.pipeline.prompts import parse_prompt
from tests.conftest import GitRepo, prompt_file
from tests.stub_llm import Reply, StubLLM, user_text

BOOKINGS = ["B-1040", "B-1041", "B-1042", "B-1043"]
# The head prompt answers questions 2 and 3 wrongly (regressions), and question 0 rightly (a fix).
BASE_RIGHT, HEAD_RIGHT = {1, 2, 3}, {0, 1}


def _config(**suite: Any) -> dict[str, Any]:
    entry = {"name": "stays", "prompt": "prompts/qa.yaml", "dataset": "evals/qa.jsonl", **suite}
    prices = {"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}
    # Four cases: below the default `min_cases`, so this repository's policy sets its own minimum.
    thresholds = {"min_cases": 4}
    graders = [{"type": "equals", "field": "expected"}]
    return {"prices": prices, "thresholds": thresholds, "suites": [{**entry, "graders": graders}]}


def _rows() -> list[dict[str, Any]]:
    return [{"booking_id": b, "question": f"q{i}", "expected": f"a{i}"} for i, b in enumerate(BOOKINGS)]


def _answer(body: dict[str, Any]) -> Reply:
    case = int(user_text(body).removeprefix("Question: q"))
    right = HEAD_RIGHT if "v2" in body["messages"][0]["content"] else BASE_RIGHT
    return Reply(text=f"a{case}" if case in right else "wrong")


def _eval(repo: GitRepo, stub: StubLLM, fmt: str = "markdown") -> tuple[int, str]:
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    result = CliRunner().invoke(cli, [*args, "--format", fmt, "--no-cache"])
    return result.exit_code, result.output


def _two_revisions(repo: GitRepo, config: dict[str, Any], head_rows: list[dict[str, Any]]) -> None:
    repo.write(".evalbot.yml", config)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1 agent"))
    repo.write("evals/qa.jsonl", _rows())
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2 agent"))
    repo.write("evals/qa.jsonl", head_rows)
    repo.commit("head", tag="head")


def test_regressions_fixes_and_changed_rows_are_listed_by_id_field(repo: GitRepo, stub: StubLLM) -> None:
    head_rows = _rows()
    head_rows[0]["note"] = "checked"  # one edited row, found by its booking_id in the base too
    _two_revisions(repo, _config(id_field="booking_id"), head_rows)
    stub.handler = _answer

    code, output = _eval(repo, stub, "json")
    report = json.loads(output)
    (suite,) = report["suites"]
    assert [f["case_id"] for f in suite["regressions"]] == ["B-1042", "B-1043"]
    assert [f["case_id"] for f in suite["fixes"]] == ["B-1040"]
    (data,) = report["data"]
    # The base's rows are named by the head's id_field too: only the edited row changed, none added or removed.
    assert (data["added"], data["removed"], data["changed"]) == ([], [], ["B-1040"])
    assert report["warnings"] == ["evals/qa.jsonl: fields no prompt or grader of suite stays reads: note"]

    code, output = _eval(repo, stub)
    assert code == 0  # 4 cases: too few for a significant drop
    assert "| `B-1042` | — | a2 | wrong | expected 'a2' |\n| `B-1043` | — | a3 | wrong | expected 'a3' |" in output
    assert "| `B-1040` | — | wrong | a0 | expected 'a0' |" in output
    assert "Changed (1): `B-1040` (note)" in output


@pytest.mark.parametrize(
    ("dataset", "expected_error"),
    [
        (
            '{"booking_id": "B-1", "question": "q"}\n\n{"question": "q2"}\n',
            "evals/qa.jsonl:3 (row 2): case id field 'booking_id' (the suite's id_field) is missing",
        ),
        (
            '{"booking_id": "B-1", "question": "q"}\n{"booking_id": "", "question": "q2"}\n',
            "evals/qa.jsonl:2 (row 2): case id field 'booking_id' (the suite's id_field) is empty",
        ),
        (
            '{"booking_id": "B-1", "question": "q"}\n{"booking_id": null, "question": "q2"}\n',
            "evals/qa.jsonl:2 (row 2): case id field 'booking_id' (the suite's id_field) is empty",
        ),
        (
            '{"booking_id": "B-1", "question": "q"}\n{"booking_id": ["B-2"], "question": "q2"}\n',
            "evals/qa.jsonl:2 (row 2): case id field 'booking_id' must be a string or a number",
        ),
        (
            '{"booking_id": "B-1", "question": "q"}\n{"booking_id": "B-2", "question": "q2"}\n\n'
            '{"booking_id": "B-1", "question": "q3"}\n',
            "evals/qa.jsonl:4 (row 3): case id 'B-1' repeats line 1 (row 1)",
        ),
    ],
)
def test_a_missing_or_repeated_id_is_an_input_error_naming_the_lines(
    repo: GitRepo, stub: StubLLM, dataset: str, expected_error: str
) -> None:
    _two_revisions(repo, _config(id_field="booking_id"), _rows())
    repo.write("evals/qa.jsonl", dataset)
    repo.commit("broken", tag="broken")
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "broken", "--api-base", stub.base_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert expected_error in result.output
    assert stub.requests == []


def test_csv_row_with_an_empty_id_names_its_line() -> None:
    with pytest.raises(
        InputError, match=r"^d.csv:3 \(row 2\): case id field 'case_id' \(the suite's id_field\) is empty"
    ):
        parse_dataset("case_id,q\nC1,x\n,y\n", "d.csv", id_field="case_id")


def test_without_id_field_rows_lacking_id_keep_hashes_and_the_report_says_so(repo: GitRepo, stub: StubLLM) -> None:
    _two_revisions(repo, _config(), _rows())
    stub.handler = _answer

    _code, output = _eval(repo, stub, "json")
    report = json.loads(output)
    regressed = [f["case_id"] for f in report["suites"][0]["regressions"]]
    assert len(regressed) == 2 and all(len(case_id) == 12 for case_id in regressed)
    assert report["warnings"] == [
        "evals/qa.jsonl: 4 of 4 rows have no id field, so the report names their cases by a hash of the row; "
        "set id_field on suite stays to the field that holds your case ids (id_field: booking_id would do)",
        "evals/qa.jsonl: fields no prompt or grader of suite stays reads: booking_id",
    ]


def test_duplicates_and_drift_leave_the_id_field_out() -> None:
    rows = [{"booking_id": f"B-{i}", "request": "late checkout", "nights": i % 3} for i in range(40)]
    rows[5]["request"] = "early check-in"
    text = "".join(json.dumps(row) + "\n" for row in rows)
    head = parse_dataset(text, "evals/d.jsonl", id_field="booking_id")
    base = parse_dataset(text, "evals/d.jsonl", id_field="booking_id")
    prompt = parse_prompt('version: "1.0.0"\nmodel: m\nuser_prompt_template: "{request}"\n', "p.yaml")
    quality = check("stays", head, base, DataGates(), prompt)
    # Rows equal but for their booking_id repeat the first such row; the id column is never a drift column.
    assert quality.duplicate_rows[:2] == [("B-3", "B-0"), ("B-4", "B-1")]
    assert len(quality.duplicate_rows) == 36
    assert sorted(d.column for d in quality.drift) == ["nights", "request"]
