"""The base's limits bound what a pull request makes the worker read: file size, rows, YAML aliases."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.errors import InputError
from bot.pipeline.datasets import parse_dataset
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import StubLLM

CONFIG = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])

# The "billion laughs": 370 bytes that expand to 9^9 (387 million) strings once anything walks the data
# (the 403-byte variant took 964 MiB).
BILLION_LAUGHS = """\
- id: lol
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(n)]


def two_revisions(repo: GitRepo, base_limits: dict[str, Any], head_rows: list[dict[str, Any]] | str) -> None:
    """Base: the suite under `base_limits`. Head: lifts every limit in its own config, changes the dataset."""
    repo.write(".evalbot.yml", {"limits": base_limits, **CONFIG})
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", rows(3))
    repo.commit("base", tag="base")
    repo.write(".evalbot.yml", {"limits": {"max_file_mb": 100, "max_cases": 1_000_000}, **CONFIG})
    repo.write("evals/qa.jsonl", head_rows)
    repo.commit("head", tag="head")


def cli_eval(repo: GitRepo, stub: StubLLM) -> Any:
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    return CliRunner().invoke(cli, args)


def test_a_dataset_over_the_bases_size_cap_is_refused_before_it_is_read(repo: GitRepo, stub: StubLLM) -> None:
    big = "".join(json.dumps(row) + "\n" for row in rows(400))
    two_revisions(repo, {"max_file_mb": 0.01}, big)

    result = cli_eval(repo, stub)

    assert result.exit_code == 2
    assert len(big) == 21_670
    assert "evals/qa.jsonl: file is 0.0217 MB (21,670 bytes), over the limit of 0.01 MB (" in result.output
    assert stub.requests == []


def test_a_dataset_over_the_bases_row_cap_is_refused_before_any_check_or_call(repo: GitRepo, stub: StubLLM) -> None:
    two_revisions(repo, {"max_cases": 100}, rows(101))

    result = cli_eval(repo, stub)

    assert result.exit_code == 2
    assert "evals/qa.jsonl:101 (row 101): more than 100 rows (" in result.output
    assert stub.requests == []


def test_the_default_row_cap_is_5000(repo: GitRepo, stub: StubLLM) -> None:
    two_revisions(repo, {}, rows(5001))
    result = cli_eval(repo, stub)
    assert result.exit_code == 2
    assert "evals/qa.jsonl:5001 (row 5001): more than 5,000 rows" in result.output
    assert stub.requests == []


def test_a_yaml_alias_bomb_is_refused_at_its_first_alias_in_little_memory(repo: GitRepo) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as refused:
            parse_dataset(BILLION_LAUGHS, "evals/qa.yaml")
        _now, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(refused.value) == (
        "evals/qa.yaml:3: YAML aliases (*name) are not allowed: write the value out (an alias can expand without bound)"
    )
    assert peak_bytes < 1_000_000

    # The same for a prompt and for `.evalbot.yml` itself, through `evalbot validate`.
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.yaml", [{"type": "equals"}])
    repo.write(".evalbot.yml", config)
    repo.write("evals/qa.yaml", BILLION_LAUGHS)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert result.exit_code == 2
    assert "error: evals/qa.yaml:3: YAML aliases (*name) are not allowed" in result.output

    repo.write("evals/qa.yaml", "- {id: c1, question: q1}\n")
    repo.write("prompts/qa.yaml", 'version: "1.0.0"\nmodel: &m openai/stub\nuser_prompt_template: *m\n')
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert result.exit_code == 2
    assert "error: prompts/qa.yaml:3: YAML aliases (*name) are not allowed" in result.output

    repo.write(".evalbot.yml", "judge: &j openai/stub\napprovers: [*j]\n")
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert result.exit_code == 2
    assert "error: .evalbot.yml:2: YAML aliases (*name) are not allowed" in result.output
