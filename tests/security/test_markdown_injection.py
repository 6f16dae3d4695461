"""Untrusted strings cannot start a line, a heading, a link, a quote, HTML or a table in anything posted."""

from __future__ import annotations

import re
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from bot.github.state.approvals import Approval
from bot.pipeline.render import render_markdown, render_template
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM, user_text

# Each one, left alone, is a heading, a link, a table, a quote, HTML or a list on GitHub.
HOSTILE = [
    "c0\n## evalbot: ✅ pass PWNED\n",
    "[PWNED](https://evil.example/approve)",
    "| PWNED | x |\n|---|---|\n| y | z |",
    "> PWNED quote",
    "<img src=x onerror=PWNED>",
    "- PWNED item",
    "1. PWNED item",
    "# PWNED",
]
ANSWER = "\n# PWNED answer\n[click](https://evil.example/PWNED) https://evil.example/PWNED <b>PWNED</b>"
# A line where hostile text starts a block: markup characters, then the text.
_STARTS_BLOCK = re.compile(r"^(?:[\s#>|\[<*+=\d.)-]*PWNED|#+ evalbot: ✅ pass PWNED)")


def assert_inert(markdown: str) -> None:
    """Hostile text is never a block, a link, HTML or a table of its own, as CommonMark + tables parse it."""
    for line in markdown.splitlines():
        assert not _STARTS_BLOCK.match(line), line
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    in_heading = in_header = False
    list_depth = 0
    for token in _walk(tokens):
        in_heading = (in_heading or token.type == "heading_open") and token.type != "heading_close"
        in_header = (in_header or token.type == "thead_open") and token.type != "thead_close"
        list_depth += {"bullet_list_open": 1, "ordered_list_open": 1}.get(token.type, 0)
        list_depth -= {"bullet_list_close": 1, "ordered_list_close": 1}.get(token.type, 0)
        assert list_depth <= 1, "a list inside a list item"
        assert token.type not in ("link_open", "image", "blockquote_open", "ordered_list_open"), token
        if token.type in ("html_inline", "html_block"):
            assert "PWNED" not in token.content and "<img" not in token.content, token.content
        if token.type == "text":
            assert not ((in_heading or in_header) and "PWNED" in token.content), token.content
            # GitHub links bare URLs in text (not in code spans).
            assert "https://" not in token.content and "www." not in token.content, token.content


def _walk(tokens: list[Token]) -> Any:
    for token in tokens:
        yield token
        yield from _walk(token.children or [])


@pytest.mark.slow
async def test_hostile_ids_answers_and_categories_render_inert(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}]))
    rows = [
        {"id": case_id, "question": f"q{i}", "expected": f"a{i}", "category": HOSTILE[(i + 1) % len(HOSTILE)]}
        for i, case_id in enumerate(HOSTILE)
    ]
    repo.write("evals/qa.jsonl", rows)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    repo.commit("base", tag="base")
    repo.write("evals/qa.jsonl", [*rows, {**rows[0], "id": "- PWNED duplicate"}])
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    repo.commit("head", tag="head")
    # Base answers every case right; head answers every case with hostile Markdown: all regress.
    stub.handler = lambda body: Reply(
        text=ANSWER if "v2" in body["messages"][0]["content"] else "a" + user_text(body).rsplit("q", 1)[-1]
    )

    report = await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))
    markdown = render_markdown(report)

    # The duplicate row sends the same request as c0: one sample, listed among the same-request cases.
    assert len(report.suites[0].regressions) == len(HOSTILE)
    assert any("1 rows send the same request as an earlier row (- PWNED duplicate = c0" in w for w in report.warnings)
    assert_inert(markdown)
    # Ids are shown as code, whitespace collapsed; a "|" escaped so the table keeps its columns.
    assert "| `c0 ## evalbot: ✅ pass PWNED` |" in markdown
    assert "| `\\| PWNED \\| x \\| \\|---\\|---\\| \\| y \\| z \\|` |" in markdown
    assert "`- PWNED duplicate` repeats `c0 ## evalbot: ✅ pass PWNED`" in markdown


def test_hostile_file_names_reasons_and_commands_render_inert() -> None:
    hostile = " ".join(HOSTILE)
    report = Report("main", "feature", [], errors=[f"{h}: not valid JSON" for h in HOSTILE])
    report.warnings = list(HOSTILE)
    report.problems = list(HOSTILE)
    approval = Approval("a" * 40, "lead", hostile, True, 0.0)
    audit = [{"at": 0.0, "kind": "refused", "actor": h, "sha": "b" * 40, "reason": h} for h in HOSTILE]
    reply = "command_reply.md.j2"
    rendered = [
        render_markdown(report),
        *(render_template(reply, actor="mallory", command=h, reason=h, show_help=False) for h in HOSTILE),
        *(render_template("job_failed.md.j2", reason=h) for h in HOSTILE),
        render_template("approval.md.j2", state="approved", head_sha="a" * 40, approvers=HOSTILE, audit=audit,
                        approval=approval),
        render_template("approval.md.j2", state="waiting", head_sha="a" * 40, approvers=HOSTILE, audit=[],
                        suites=HOSTILE, evals_failed=True),
    ]  # fmt: skip
    for markdown in rendered:
        assert_inert(markdown)
    assert rendered[1] == "@mallory `c0 ## evalbot: ✅ pass PWNED`: c0 ## evalbot: ✅ pass PWNED\n"
    assert "- \\# PWNED: not valid JSON" in rendered[0]
