"""evalbot and `promptfoo eval` on the same promptfoo project and the same stub count the same passes
per assertion type. promptfoo comes from scripts/install-test-tools.sh (CI runs it; a skip fails CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.conftest import STUB_PRICES, GitRepo
from tests.stub_llm import Reply, StubLLM

FIXTURE = Path(__file__).parents[2] / "fixtures" / "formats" / "promptfoo" / "support-bot"
PROMPTFOO = (
    Path(os.environ.get("PF", Path.home() / ".cache" / "evalbot-bench" / "promptfoo")) / "node_modules/.bin/promptfoo"
)
# The answers of the model under test, by a phrase of the question; a chat prompt (with a system
# message) prefixes one answer with "As an AI", which `not-icontains` catches.
ANSWERS = [
    ("capital of France", "Paris is the capital of France."),
    ("refunds take", "Refunds take 30 days."),
    ("after 60 days", "No, refunds are only possible within 30 days."),
    ("2+2", "4"),
    ("Where is my order", "Your order ships in 2 business days."),
    ("as JSON", 'Here it is: {"status": "shipped"}'),
    ("Say hello", "Hello! How can I help you?"),
]


def answer(body: dict[str, Any]) -> Reply:
    messages = body["messages"]
    question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    text = next((a for phrase, a in ANSWERS if phrase in question), "I don't know.")
    chat = any(m["role"] == "system" for m in messages)
    return Reply(text=f"As an AI, {text}" if chat and "capital" in question else text)


def promptfoo_counts(project: Path, stub: StubLLM) -> Counter[tuple[str, bool]]:
    home = project / ".promptfoo"
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-stub",
        "OPENAI_BASE_URL": stub.base_url,
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_DISABLE_SHARING": "1",
        "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
        "PROMPTFOO_DISABLE_REDTEAM_REMOTE_GENERATION": "1",
        "PROMPTFOO_DISABLE_SHARE_EMAIL_REQUEST": "1",
        "PROMPTFOO_SELF_HOSTED": "1",
        "PROMPTFOO_CONFIG_DIR": str(home),
        "PROMPTFOO_CACHE_PATH": str(home / "cache"),
    }
    command = [str(PROMPTFOO), "eval", "-c", "promptfooconfig.yaml", "--no-cache", "-j", "4", "--no-progress-bar"]
    command += ["--no-write", "-o", "results.json", "--no-share", "--no-table"]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=180)
    assert (project / "results.json").exists(), done.stdout + done.stderr
    results = json.loads((project / "results.json").read_text())["results"]["results"]
    counts: Counter[tuple[str, bool]] = Counter()
    for result in results:
        for component in result["gradingResult"]["componentResults"]:
            counts[(component["assertion"]["type"], bool(component["pass"]))] += 1
    return counts


def evalbot_counts(report: dict[str, Any]) -> Counter[tuple[str, bool]]:
    counts: Counter[tuple[str, bool]] = Counter()
    for suite in report["suites"]:
        for row in suite["assertions_head"]:
            counts[(row["name"], True)] += row["passed"]
            counts[(row["name"], False)] += row["judged"] - row["passed"]
    return counts


@pytest.mark.skipif(not PROMPTFOO.exists(), reason="promptfoo is not installed: run scripts/install-test-tools.sh")
def test_evalbot_counts_the_same_passes_per_assertion_as_promptfoo(
    tmp_path: Path, repo: GitRepo, stub: StubLLM
) -> None:
    stub.handler = answer
    project = tmp_path / "promptfoo-project"
    shutil.copytree(FIXTURE, project)
    expected = promptfoo_counts(project, stub)
    # The project as it is in a repository, with a suite pointing at its config.
    shutil.copytree(FIXTURE, repo.root / "evals")
    suite = {"name": "support-bot", "promptfoo": "evals/promptfooconfig.yaml"}
    repo.write(".evalbot.yml", {"thresholds": {"min_cases": 1}, "prices": STUB_PRICES, "suites": [suite]})
    repo.commit("base", tag="base")
    repo.commit("head", tag="head")

    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--all", "--format", "json"]
    result = CliRunner().invoke(cli, [*args, "--api-base", stub.base_url, "--no-cache"])

    report = json.loads(result.output)
    assert report["errors"] == [], result.output
    counted = evalbot_counts(report)
    # javascript is promptfoo's to run, never evalbot's: it is listed as not run instead.
    ran = Counter({key: n for key, n in expected.items() if key[0] != "javascript"})
    assert counted == ran
    # The fixture exercises every outcome: a check that only ever passed would prove little.
    assert ran[("not-icontains", False)] == 1 and ran[("levenshtein", False)] == 2 and ran[("is-json", False)] == 2
    assert sum(ran.values()) == 58
