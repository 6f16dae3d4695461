"""Dataset quality gates on crafted datasets: exact findings."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.pipeline.config import DataGates
from bot.pipeline.data_quality import check
from bot.pipeline.datasets import Dataset, parse_dataset
from bot.pipeline.prompts import parse_prompt
from tests.conftest import GitRepo, prompt_file, suite_config

PROMPT = parse_prompt('version: "1.0.0"\nmodel: m\nuser_prompt_template: "Guest request: {guest_request}"\n', "p.yaml")
SCHEMA = """
type: object
required: [id, guest_request, category, nights_stayed]
properties:
  guest_request: {type: string, minLength: 5}
  category: {enum: [booking, cancellation, complaint]}
  nights_stayed: {type: integer, minimum: 0}
"""


def dataset(rows: list[dict[str, Any]], path: str = "evals/d.jsonl") -> Dataset:
    return parse_dataset("".join(json.dumps(r) + "\n" for r in rows), path)


def rows(categories: list[str], nights: list[int] | None = None) -> list[dict[str, Any]]:
    return [
        {
            "id": f"c{i}",
            "guest_request": f"request number {i} about my stay",
            "category": category,
            "nights_stayed": (nights or [5 + i % 7 for i in range(len(categories))])[i],
        }
        for i, category in enumerate(categories)
    ]


def test_every_schema_violation_is_listed_with_line_and_path() -> None:
    data = rows(["booking"] * 5)
    data[2]["nights_stayed"] = "many"
    data[4]["category"] = "refund"
    del data[4]["guest_request"]
    result = check("qa", dataset(data), None, DataGates(), PROMPT, schema=("evals/d.schema.yaml", SCHEMA))
    assert result.schema_violation_count == 3
    listed = [(v.line, v.case_id, v.path, v.rule) for v in result.schema_violations]
    assert listed == [(3, "c2", "nights_stayed", "type"), (5, "c4", "(row)", "required"), (5, "c4", "category", "enum")]
    assert result.failed and result.findings[0].message == "3 rows break the schema evals/d.schema.yaml"


def test_a_2020_12_keyword_is_checked_by_jsonschema() -> None:
    schema = "type: object\ndependentRequired: {nights_stayed: [category]}\n"
    data = rows(["booking"] * 3)
    del data[1]["category"]
    result = check("qa", dataset(data), None, DataGates(), PROMPT, schema=("s.yaml", schema))
    assert [(v.line, v.rule) for v in result.schema_violations] == [(2, "dependentRequired")]


def test_a_category_going_from_20_to_65_percent_is_flagged_with_its_psi() -> None:
    base = rows(["complaint"] * 20 + ["booking"] * 40 + ["cancellation"] * 40)
    head = rows(["complaint"] * 65 + ["booking"] * 18 + ["cancellation"] * 17)
    result = check("qa", dataset(head), dataset(base), DataGates(), PROMPT)
    (category,) = [d for d in result.drift if d.column == "category"]
    expected_psi = (
        (0.65 - 0.20) * math.log(0.65 / 0.20)
        + (0.18 - 0.40) * math.log(0.18 / 0.40)
        + (0.17 - 0.40) * math.log(0.17 / 0.40)
    )
    assert category.psi == pytest.approx(expected_psi) and category.psi == pytest.approx(0.9025, abs=1e-3)
    assert category.test == "chi-square" and category.drifted and category.p_value < 1e-8
    assert [f.gate for f in result.findings] == ["drift"]
    assert result.findings[0].severity == "warn" and not result.failed  # drift asks for review, does not fail
    assert result.changed == [f"c{i}" for i in range(20, 83)]  # 20-64 became complaints, 65-82 bookings


def test_an_unchanged_dataset_gives_no_finding() -> None:
    data = rows(["complaint"] * 20 + ["booking"] * 40 + ["cancellation"] * 40)
    result = check("qa", dataset(data), dataset(data), DataGates(), PROMPT, schema=("s.yaml", SCHEMA))
    assert result.findings == [] and not any(d.drifted for d in result.drift)
    assert (result.added, result.removed, result.changed) == ([], [], [])


def test_a_3_sigma_outlier_is_found() -> None:
    categories = ["booking"] * 30
    base = rows(categories, nights=[10 + (i % 5) for i in range(30)])  # mean 12, sd ≈ 1.44
    head = rows(categories, nights=[10 + (i % 5) for i in range(29)] + [19])
    result = check("qa", dataset(head), dataset(base), DataGates(), PROMPT)
    anomalies = [f.message for f in result.findings if f.gate == "anomalies"]
    assert anomalies == ["`nights_stayed` = 19 in row c29 is over 3σ from the base mean"]


def test_row_count_and_empty_share_anomalies() -> None:
    base = rows(["booking"] * 40)
    head = rows(["booking"] * 10)
    for row in head[:5]:
        row["guest_request"] = ""
    messages = [f.message for f in check("qa", dataset(head), dataset(base), DataGates(), PROMPT).findings]
    assert "row count changed by -75% (40 → 10)" in messages
    assert "empty `guest_request` rose from 0% to 50% of rows" in messages


def test_contaminated_rows_are_listed_exact_and_normalised() -> None:
    head = rows(["booking"] * 4)
    training = [
        {"messages": [{"role": "user", "content": "Guest request: request number 1 about my stay"}]},
        {"guest_request": "REQUEST number 2, about my stay!"},
        {"guest_request": "something else entirely"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in training)
    result = check("qa", dataset(head), None, DataGates(), PROMPT, training=("train/chat.jsonl", text))
    assert result.contaminated == [("c1", "exact"), ("c2", "normalised")]
    assert result.failed and result.findings[-1].message == "2 eval rows also appear in train/chat.jsonl"


def test_duplicate_rows_under_other_ids() -> None:
    data = rows(["booking"] * 3)
    data.append({**data[1], "id": "copy", "guest_request": data[1]["guest_request"].upper()})
    result = check("qa", dataset(data), None, DataGates(), PROMPT)
    assert result.duplicate_rows == [("copy", "c1")] and not result.failed


@pytest.mark.slow
def test_gates_from_the_base_decide_what_fails(repo: GitRepo) -> None:
    config = suite_config("qa", "prompts/p.yaml", "evals/d.jsonl", [{"type": "equals"}])
    config["suites"][0]["schema"] = "evals/d.schema.yaml"
    config["suites"][0]["data_gates"] = {"schema": "fail"}
    repo.write(".evalbot.yml", config)
    repo.write("evals/d.schema.yaml", SCHEMA)
    repo.write("prompts/p.yaml", prompt_file("1.0.0", user_prompt_template="Guest request: {guest_request}"))
    repo.write("evals/d.jsonl", rows(["booking"] * 3))
    repo.commit("base", tag="base")
    bad = rows(["booking"] * 3)
    bad[1]["nights_stayed"] = -2
    repo.write("evals/d.jsonl", bad)
    # The pull request also tries to turn the schema gate off: policy comes from the base.
    config["suites"][0]["data_gates"] = {"schema": "off"}
    repo.write(".evalbot.yml", config)
    repo.commit("head", tag="head")
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", "http://127.0.0.1:1/v1"]
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)["data"][0]
    assert data["schema_violation_count"] == 1
    assert data["schema_violations"][0]["line"] == 2 and data["schema_violations"][0]["path"] == "nights_stayed"

    # `validate` checks a checkout under its own policy.
    config["suites"][0]["data_gates"] = {"schema": "fail"}
    repo.write(".evalbot.yml", config)
    validate = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert validate.exit_code == 1
    assert "evals/d.jsonl:2 (case c1) nights_stayed: minimum: -2 is less than the minimum of 0" in validate.output
