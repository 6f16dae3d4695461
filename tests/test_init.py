"""`evalbot init`: a commented `.evalbot.yml` from the prompts and datasets of a repository, then validated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.pipeline.config import DEFAULT_BUDGET_USD, EqualsGrader, Suite, parse_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hotel-agent"


@pytest.fixture
def hotel(tmp_path: Path) -> Path:
    """The example repository without its `.evalbot.yml`."""
    root = tmp_path / "hotel"
    shutil.copytree(EXAMPLE, root)
    (root / ".evalbot.yml").unlink()
    return root


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _write(root: Path, path: str, text: str) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)


def test_init_on_the_example_writes_a_config_that_validates(hotel: Path) -> None:
    code, output = _run("init", "--repo", str(hotel))
    assert output == (
        f"wrote {hotel / '.evalbot.yml'}:\n"
        "  suite guest-agent: prompts/guest_agent.yaml on evals/guest_agent.jsonl (ids from id)\n"
        "checking it as evalbot validate does:\n"
        "ok: suite guest-agent: prompts/guest_agent.yaml v1.2.0, 66 cases in evals/guest_agent.jsonl\n"
    )
    assert code == 0
    config = parse_config((hotel / ".evalbot.yml").read_text())
    assert config.suites == [
        Suite(
            name="guest-agent",
            prompt="prompts/guest_agent.yaml",
            dataset="evals/guest_agent.jsonl",
            id_field="id",
            graders=[EqualsGrader(type="equals", ignore_case=True)],
        )
    ]
    # Policy keys are there to uncomment, each with what it does; until then the defaults apply.
    assert (config.approvers, config.budget.max_cost_usd, config.prices) == ([], DEFAULT_BUDGET_USD, {})
    text = (hotel / ".evalbot.yml").read_text()
    assert (
        '# Who may /approve a pull request: GitHub logins and "@org/team"s. Until some are listed, nobody can.\n'
        in text
    )
    assert '# approvers: [your-login, "@your-org/ai-leads"]\n' in text
    assert "# budget: {max_cost_usd: 5.0}\n" in text
    assert "#   accuracy_drop_pp: 2.0              # accuracy, in percentage points\n" in text
    assert _run("validate", "--repo", str(hotel)) == (
        0,
        "ok: suite guest-agent: prompts/guest_agent.yaml v1.2.0, 66 cases in evals/guest_agent.jsonl\n",
    )


def test_init_never_overwrites_a_config(hotel: Path) -> None:
    _write(hotel, ".evalbot.yml", "approvers: [lead]\n")
    code, output = _run("init", "--repo", str(hotel))
    assert (code, output) == (
        2,
        f"error: {hotel / '.evalbot.yml'}: already exists; evalbot init never overwrites it "
        "(edit it, or move it away first)\n",
    )
    assert (hotel / ".evalbot.yml").read_text() == "approvers: [lead]\n"


def test_a_prompt_without_a_matching_dataset_gets_a_commented_stanza(hotel: Path) -> None:
    _write(
        hotel,
        "prompts/summary.yaml",
        'version: "1.0.0"\nmodel: openai/x\nuser_prompt_template: "{article} in {lang}"\n',
    )
    code, output = _run("init", "--repo", str(hotel))
    assert code == 0
    assert "  prompts/summary.yaml: no dataset fits it; its suite summary is left commented out\n" in output
    text = (hotel / ".evalbot.yml").read_text()
    stanza = (
        "  # prompts/summary.yaml: no dataset found whose rows have every field the prompt uses\n"
        "  # (article, lang). Add one (JSONL, CSV, YAML or JSON rows\n"
        "  # with those fields), then uncomment this suite:\n"
        "  # - name: summary\n"
        "  #   prompt: prompts/summary.yaml\n"
        "  #   dataset: evals/summary.jsonl\n"
        "  #   graders:\n"
        "  #     - {type: equals, field: expected}\n"
    )
    assert stanza in text
    assert [s.name for s in parse_config(text).suites] == ["guest-agent"]
    # Uncommented, with a dataset written, the stanza is a suite that validates.
    _write(hotel, "evals/summary.jsonl", json.dumps({"article": "a", "lang": "en", "expected": "x"}) + "\n")
    uncommented = text.replace(stanza, "".join(line.replace("# ", "", 1) + "\n" for line in stanza.splitlines()[3:]))
    (hotel / ".evalbot.yml").write_text(uncommented)
    code, output = _run("validate", "--repo", str(hotel))
    assert "ok: suite summary: prompts/summary.yaml v1.0.0, 1 cases in evals/summary.jsonl\n" in output
    # It validates, and one row is certain to fail the gate: validate says so, with exit 1.
    assert "fail: suite summary has 1 cases, fewer than `thresholds.min_cases` (20)" in output
    assert code == 1


def test_init_picks_the_closest_dataset_guesses_id_field_and_skips_dependencies(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    prompt = 'version: "1.0.0"\nmodel: openai/x\nuser_prompt_template: "Order {order_id}: {question}"\n'
    _write(root, "ai/support.yaml", prompt)
    # The same prompt inside dependencies and virtualenvs is not the team's.
    _write(root, "node_modules/pkg/support.yaml", prompt)
    _write(root, "tools/py/pyvenv.cfg", "home = /usr/bin\n")
    _write(root, "tools/py/lib/other.yaml", prompt)
    _write(root, ".cache/copy.yaml", prompt)
    rows = "ticket_id,order_id,question\nT-1,O-1,where is it\nT-2,O-1,refund\n"
    _write(root, "data/support.csv", rows)  # closest by name; ticket_id is unique, order_id repeats
    _write(root, "data/misc.csv", "order_id,question,expected\nO-1,hi,hello\n")
    _write(root, "data/broken.jsonl", '{"order_id": "O-1"}\n{"order_id": \n')
    _write(root, "package.json", '{"name": "not a dataset"}')

    code, output = _run("init", "--repo", str(root))
    assert output.splitlines()[:4] == [
        f"wrote {root / '.evalbot.yml'}:",
        "  suite support: ai/support.yaml on data/support.csv (ids from ticket_id)",
        "  walked past data/misc.csv: no prompt found reads its rows' fields (order_id, question, expected)",
        "checking it as evalbot validate does:",
    ]
    # No grader and two rows: certain to fail the gate, and validate says why.
    assert "fail: suite support has no accuracy grader (none)" in output
    assert code == 1
    text = (root / ".evalbot.yml").read_text()
    (suite,) = parse_config(text).suites
    assert (suite.prompt, suite.dataset, suite.id_field, suite.graders) == (
        "ai/support.yaml",
        "data/support.csv",
        "ticket_id",
        [],
    )
    assert (
        "    # Fields seen in the rows: ticket_id, order_id, question.\n"
        "    # Add graders that say what a good answer is, for example\n"
        "    #   - {type: contains, field: answer}" in text
    )
    assert (
        "# Files that look like datasets but were not read:\n#   'data/broken.jsonl:2 (row 2): not valid JSON" in text
    )


def test_init_without_any_prompt_writes_nothing(tmp_path: Path) -> None:
    _write(tmp_path, "evals/a.jsonl", '{"id": 1}\n')
    code, output = _run("init", "--repo", str(tmp_path))
    assert code == 2
    assert output == (
        f"error: no prompt file found under {tmp_path} (evalbot's prompt YAML, .prompty, a LangChain prompt, a "
        "template in a prompts/ directory, OpenAI-evals samples or a promptfooconfig.yaml); walked past: "
        "evals/a.jsonl: no prompt found reads its rows' fields (id); nothing written\n"
    )
    assert not (tmp_path / ".evalbot.yml").exists()
