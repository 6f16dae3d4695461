"""What each command imports: litellm starts loading in the background for `eval` only; nothing of the
GitHub App (githubkit) is loaded by the command line's evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import StubLLM

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("litellm", "githubkit", "scipy")


def run_cli(*args: str) -> tuple[list[str], str]:
    """Run `evalbot ARGS` in a fresh interpreter; the heavy modules it had loaded at exit, and its stdout."""
    code = (
        "import sys\nfrom bot.cli import cli\ntry:\n    cli(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print('\\nloaded:', *[m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    report, _, loaded = out.stdout.rpartition("\nloaded:")
    return loaded.split(), report


def test_help_loads_none_of_the_heavy_modules() -> None:
    loaded, text = run_cli("--help")
    assert loaded == [] and "eval" in text


def test_eval_loads_litellm_and_never_githubkit(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "contains"}]))
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": "ok"} for i in range(3)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="Be brief."))
    repo.commit("head")
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--format", "json", "--api-base", stub.base_url]
    loaded, report = run_cli(*args)
    assert "litellm" in loaded and "githubkit" not in loaded
    assert json.loads(report)["spend"]["http_requests"] == 6
