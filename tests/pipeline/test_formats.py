"""Each format read in place: `evalbot init` drafts a suite pointing at the files as they are, `evalbot eval`
reaches a report through litellm and the stub model, and editing the file the app loads makes the suite
affected. Fixtures: tests/fixtures/formats/<format>/ (layouts as real projects keep them)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.pipeline.config import parse_config
from tests.conftest import GitRepo
from tests.stub_llm import Handler, Reply, StubLLM, user_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
# Every answer graded right on both sides. (The verdict may still fail on latency: the stub's timings
# on a shared machine are noise, and this file is about reading formats, not about the gate.)
ACCURACY_ALL_PASS = re.compile(r"\| Accuracy \| 100\.0% \[[\d.]+, 100\.0\] \| 100\.0% \[[\d.]+, 100\.0\] \| \+0\.0 pp")


def oracle(answers: dict[str, str]) -> Handler:
    """Answer each request with the answer of the first key found in its last user message."""

    def handler(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        return Reply(text=next((answer for key, answer in answers.items() if key in text), "no idea"))

    return handler


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def from_fixture(name: str, tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / name)
    shutil.copytree(FIXTURES / name, repo.root, dirs_exist_ok=True)
    return repo


def init(repo: GitRepo) -> tuple[str, str]:
    result = CliRunner().invoke(cli, ["init", "--repo", str(repo.root)])
    assert result.exit_code == 0, result.output
    return result.output, (repo.root / ".evalbot.yml").read_text()


def evaluate(repo: GitRepo, stub: StubLLM, *extra: str) -> tuple[int, str]:
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    result = CliRunner().invoke(cli, [*args, *extra])
    return result.exit_code, result.output


def edit(repo: GitRepo, path: str, old: str, new: str) -> None:
    text = (repo.root / path).read_text()
    assert old in text
    (repo.root / path).write_text(text.replace(old, new))


def evaluate_edits(repo: GitRepo, stub: StubLLM, edits: list[tuple[str, str, str]], answers: dict[str, str]) -> str:
    """Commit the repository as base, `edits` (path, old, new) as head, and evaluate with the stub answering
    `answers`: every answer is graded right on both sides."""
    repo.commit("base", tag="base")
    for path, old, new in edits:
        edit(repo, path, old, new)
    repo.commit("head", tag="head")
    stub.handler = oracle(answers)
    code, report = evaluate(repo, stub)
    assert code in (0, 1) and ACCURACY_ALL_PASS.search(report), report
    return report


def test_a_prompty_file_and_its_jsonl_eval_set(tmp_path: Path, stub: StubLLM) -> None:
    repo = from_fixture("prompty", tmp_path)
    output, text = init(repo)
    assert "  suite chat: src/support/chat.prompty on evals/support_eval.jsonl (ids from id)\n" in output
    (suite,) = parse_config(text).suites
    assert (suite.prompt, suite.dataset, suite.expected_field, suite.model) == (
        "src/support/chat.prompty",
        "evals/support_eval.jsonl",
        "ground_truth",
        None,  # the front matter's `openai` configuration maps to openai/gpt-4o-mini
    )
    assert [g.model_dump(exclude_defaults=True) for g in suite.graders] == [{"type": "equals", "ignore_case": True}]
    # The app loads retrieval.yaml beside the prompt: watched, a change to it is a change to the suite.
    (repo.root / ".evalbot.yml").write_text(
        text.replace("    id_field: id\n", "    id_field: id\n    watch: [src/support/retrieval.yaml]\n")
    )
    labels = {row["question"]: row["ground_truth"].title() for row in rows(repo.root / "evals/support_eval.jsonl")}
    edits = [
        ("src/support/chat.prompty", "Answer with one word", "Reply with a single word"),
        ("src/support/retrieval.yaml", "top_k: 4", "top_k: 8"),
    ]
    report = evaluate_edits(repo, stub, edits, labels)
    assert "src/support/chat.prompty changed; src/support/retrieval.yaml changed (watched). 24 cases." in report
    # A format without a version is told apart by a hash of its content (the drift check relies on it).
    header = re.search(r"\| Metric \| base \((sha256:[0-9a-f]{8})\) \| head \((sha256:[0-9a-f]{8})\) \|", report)
    assert header is not None and header.group(1) != header.group(2)
    # Front matter and role markers: the system section with the input's default, the user section with the row.
    first = next(r for r in stub.requests if "charged twice for my subscription" in user_text(r))
    assert first["messages"][0] == {
        "role": "system",
        "content": "You route messages for Acme Cloud support. "
        "Reply with a single word: billing, shipping, returns or account.",
    }
    assert first["messages"][1] == {"role": "user", "content": "I was charged twice for my subscription this month."}
    assert (first["model"], first["max_tokens"], first["temperature"]) == ("gpt-4o-mini", 20, 0)


def test_an_openai_evals_registry_with_chat_input_and_ideal(tmp_path: Path, stub: StubLLM) -> None:
    repo = from_fixture("openai_evals", tmp_path)
    output, text = init(repo)
    assert (
        "  suite capitals-dev: each row's input on evals/registry/data/capitals/samples.jsonl (no id field found)\n"
        in output
    )
    assert (
        "ok: suite capitals-dev: each row's input to openai/gpt-4o-mini, 24 cases in "
        "evals/registry/data/capitals/samples.jsonl\n" in output
    )
    (suite,) = parse_config(text).suites
    assert (suite.prompt, suite.model, suite.expected_field, suite.watch) == (
        None,
        "openai/gpt-4o-mini",
        "ideal",
        ["evals/registry/evals/capitals.yaml"],
    )
    assert [g.type for g in suite.graders] == ["starts_with"]  # OpenAI evals' Match
    samples = "evals/registry/data/capitals/samples.jsonl"
    cities = {}
    for row in rows(repo.root / samples):
        ideal = row["ideal"] if isinstance(row["ideal"], str) else row["ideal"][-1]
        cities[row["input"][-1]["content"]] = f"{ideal}."  # Match: the answer starts with an acceptable one
    edits = [(samples, '"ideal": "Lima"', '"ideal": ["Lima", "Ciudad de los Reyes"]')]
    report = evaluate_edits(repo, stub, edits, cities)
    assert f"{samples} changed. 24 cases." in report
    # The chat `input` is sent as those messages, system role kept, never as a Python repr.
    request = next(r for r in stub.requests if "capital of France" in user_text(r))
    assert request["messages"] == [
        {"role": "system", "content": "Answer with the name of the city only."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert not any("{'role'" in m["content"] for r in stub.requests for m in r["messages"])


def test_a_langchain_prompt_file_and_a_csv(tmp_path: Path, stub: StubLLM) -> None:
    repo = from_fixture("langchain", tmp_path)
    output, text = init(repo)
    assert "  suite sentiment: prompts/sentiment.yaml on data/reviews.csv (ids from review_id)\n" in output
    (suite,) = parse_config(text).suites
    assert (suite.model, suite.expected_field) == ("openai/gpt-4o-mini", "label")
    with (repo.root / "data/reviews.csv").open() as handle:
        labels = {row["review"]: row["label"] for row in csv.DictReader(handle)}
    edits = [("prompts/sentiment.yaml", "Answer with the one word.", "Answer with one lower-case word.")]
    report = evaluate_edits(repo, stub, edits, labels)
    assert "prompts/sentiment.yaml changed. 24 cases." in report
    request = next(r for r in stub.requests if "Battery lasts" in user_text(r))
    assert request["messages"] == [
        {
            "role": "user",
            "content": "Classify the sentiment of this product review as positive, negative or neutral.\n"
            "Answer with one lower-case word.\n\nReview: Battery lasts two full days, love it.\nSentiment:\n",
        }
    ]


def test_a_plain_text_prompt_written_with_double_braces(tmp_path: Path, stub: StubLLM) -> None:
    repo = from_fixture("plain", tmp_path)
    output, text = init(repo)
    assert "  suite headline: prompts/headline.txt on evals/headlines.jsonl (ids from id)\n" in output
    (suite,) = parse_config(text).suites
    # `{{ story }}` in a .txt file: rendered as Jinja2, never sent literally.
    assert (suite.template_format, suite.model, suite.expected_field) == ("jinja2", "openai/gpt-4o-mini", "reference")
    assert [g.type for g in suite.graders] == ["similarity"]
    headlines = {row["story"]: row["reference"] for row in rows(repo.root / "evals/headlines.jsonl")}
    report = evaluate_edits(repo, stub, [("prompts/headline.txt", "one-line headline", "short headline")], headlines)
    assert "prompts/headline.txt changed. 22 cases." in report
    assert len({json.dumps(r["messages"]) for r in stub.requests}) == 44  # 22 rows, base and head
    assert all("{{" not in m["content"] for r in stub.requests for m in r["messages"])


def test_evalbot_chat_prompt_with_few_shot_turns(tmp_path: Path, stub: StubLLM) -> None:
    repo = from_fixture("chat", tmp_path)
    _output, text = init(repo)
    (suite,) = parse_config(text).suites
    assert (suite.prompt, suite.expected_field) == ("prompts/triage.yaml", "label")
    labels = {row["ticket"]: row["label"].upper() for row in rows(repo.root / "evals/triage.jsonl")}
    edits = [
        ("prompts/triage.yaml", 'version: "1.0.0"', 'version: "1.1.0"'),
        ("prompts/triage.yaml", "p1, p2 or p3.", "p1, p2 or p3. Nothing else."),
    ]
    report = evaluate_edits(repo, stub, edits, labels)
    assert "prompts/triage.yaml changed. 22 cases." in report
    request = next(r for r in stub.requests if "Production database" in user_text(r) and "Nothing else" in str(r))
    assert request["messages"] == [
        {"role": "system", "content": "You label IT tickets with their priority: p1, p2 or p3. Nothing else.\n"},
        {"role": "user", "content": "Ticket: The whole office is offline."},
        {"role": "assistant", "content": "p1"},
        {"role": "user", "content": "Ticket: Production database is down. (reported by ana)\n"},
    ]


def test_init_names_a_promptfoo_config_and_what_it_walked_past(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURES / "plain", root)
    (root / "evals/promptfoo").mkdir(parents=True)
    (root / "evals/promptfoo/promptfooconfig.yaml").write_text(
        "prompts: [file://prompt.txt]\nproviders: [openai:gpt-4o-mini]\ntests: file://cases.csv\n"
    )
    (root / "evals/promptfoo/prompt.txt").write_text("Answer: {{question}}\n")
    rows = "".join(f"q{i},contains:a{i}\n" for i in range(25))
    (root / "evals/promptfoo/cases.csv").write_text("question,__expected\n" + rows)
    (root / "prompts/STYLE.md").write_text("House style: short sentences.\n")
    (root / "data").mkdir()
    (root / "data/metrics.csv").write_text("day,visits\nmon,3\n")
    result = CliRunner().invoke(cli, ["init", "--repo", str(root)])
    assert "  suite promptfoo: promptfoo config evals/promptfoo/promptfooconfig.yaml\n" in result.output
    assert "  walked past prompts/STYLE.md: no template variable ({name} or {{ name }}) in it\n" in result.output
    assert "  walked past data/metrics.csv: no prompt found reads its rows' fields (day, visits)\n" in result.output
    text = (root / ".evalbot.yml").read_text()
    assert "  - name: promptfoo\n    promptfoo: evals/promptfoo/promptfooconfig.yaml\n" in text
    # The suite init wrote reads the config in place and validates.
    config = "evals/promptfoo/promptfooconfig.yaml"
    assert f"ok: suite promptfoo: {config}, 25 cases in {config}\n" in result.output
    assert result.exit_code == 0, result.output


def test_init_says_a_dataset_is_a_git_lfs_pointer(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURES / "openai_evals", root)
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "4d" * 32 + "\nsize 5120\n"
    (root / "evals/registry/data/capitals/samples.jsonl").write_text(pointer)
    result = CliRunner().invoke(cli, ["init", "--repo", str(root)])
    assert result.exit_code == 2
    assert (
        "evals/registry/data/capitals/samples.jsonl: a Git LFS pointer, not the file: fetch it with `git lfs pull`"
        in result.output
    )
    assert "eval capitals.dev.v0: its samples evals/registry/data/capitals/samples.jsonl were not" in result.output


def test_graders_empty_is_written_only_with_the_fields_seen(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "prompts").mkdir(parents=True)
    (root / "prompts/reply.txt").write_text("Reply to: {message}\n")
    (root / "evals").mkdir()
    (root / "evals/messages.jsonl").write_text(
        "".join(json.dumps({"message": f"m{i}", "tone": "warm"}) + "\n" for i in range(3))
    )
    result = CliRunner().invoke(cli, ["init", "--repo", str(root)])
    text = (root / ".evalbot.yml").read_text()
    assert (
        "    # No reference answer field (expected, ideal, answer, label, reference, ground_truth, __expected) "
        "in the rows.\n"
        "    # Fields seen in the rows: message, tone.\n"
    ) in text
    assert "    graders: []\n" in text
    # validate: certain to fail the gate, so exit 1 with the reasons.
    assert "fail: suite reply has no accuracy grader (none): its accuracy cannot be measured" in result.output
    assert "fail: suite reply has 3 cases, fewer than `thresholds.min_cases` (20)" in result.output
    assert result.exit_code == 1


@pytest.mark.parametrize("fixture", ["prompty", "langchain", "plain"])
def test_the_suite_is_affected_only_by_its_own_files(tmp_path: Path, stub: StubLLM, fixture: str) -> None:
    repo = from_fixture(fixture, tmp_path)
    init(repo)
    repo.commit("base", tag="base")
    (repo.root / "NOTES.txt").write_text("unrelated\n")
    repo.commit("head", tag="head")
    code, report = evaluate(repo, stub)
    assert code == 0
    assert "nothing to evaluate." in report
    assert stub.requests == []
