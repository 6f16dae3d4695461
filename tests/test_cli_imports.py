"""What each command imports: litellm starts loading in the background for `eval` only; nothing of the
GitHub App (githubkit) is loaded by the command line's evaluation; the store (SQLAlchemy, alembic) loads
after the first model request, not on the way to it; scipy never (the paired tests are evalbot's own)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import StubLLM

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("litellm", "githubkit", "scipy", "sqlalchemy", "alembic")

# Run in the child: notes the heavy modules loaded when it first connects to the port in argv[1].
WATCH_FIRST_REQUEST = """
port, first_request = int(sys.argv.pop(1)), None
def watch(event, args):
    global first_request
    if event == "socket.connect" and first_request is None and args[1][1:2] == (port,):
        first_request = [m for m in HEAVY if m in sys.modules]
sys.addaudithook(watch)
"""


def run_cli(*args: str, port: int = 0) -> tuple[list[str], str, list[str] | None]:
    """Run `evalbot ARGS` in a fresh interpreter: the heavy modules it had loaded at exit, its stdout, and
    the heavy modules loaded when it first connected to `port` (None: it never did)."""
    code = (
        f"import sys\nHEAVY = {HEAVY!r}\n{WATCH_FIRST_REQUEST}\nfrom bot.cli import cli\n"
        "try:\n    cli(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('\\nfirst request:', first_request)\n"
        "print('\\nloaded:', *[m for m in HEAVY if m in sys.modules])"
    )
    command = [sys.executable, "-c", code, str(port), *args]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    rest, _, loaded = out.stdout.rpartition("\nloaded:")
    report, _, first_request = rest.rpartition("\nfirst request:")
    return loaded.split(), report, ast.literal_eval(first_request.strip())


def test_help_loads_none_of_the_heavy_modules() -> None:
    loaded, text, _ = run_cli("--help")
    assert loaded == [] and "eval" in text


@pytest.mark.slow
def test_eval_loads_litellm_and_never_githubkit(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "contains"}]))
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": "ok"} for i in range(3)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="Be brief."))
    repo.commit("head")
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--format", "json", "--api-base", stub.base_url]
    loaded, report, at_first_request = run_cli(*args, port=stub.port)
    assert "litellm" in loaded and "githubkit" not in loaded
    assert json.loads(report)["spend"]["http_requests"] == 6
    # Needed only after the answers (recording the run): loaded by the end, in the background once the
    # first answer is in, never before the first request goes out. scipy is not a dependency at all.
    assert {"sqlalchemy", "alembic"} <= set(loaded) and "scipy" not in loaded
    assert at_first_request == ["litellm"]
