"""Stage 6: the report as Markdown (from report_templates/) or JSON, within GitHub's size limits."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from bot.pipeline.compare import MIN_RATIO_PAIRS
from bot.pipeline.run import Report

# GitHub refuses a check run's summary or text above 65,535 bytes of UTF-8, whatever the character
# count (422 "summary exceeds a maximum bytesize of 65535"): ✅, ⚠️, → and non-Latin text take 2-4 each.
MAX_MARKDOWN_BYTES = 65_535
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "report_templates"
_DETAIL_LIMITS = (50, 20, 10, 5, 0)
# "Every row" and "whole answers" for the untrimmed report (a Jinja slice takes no None).
_FULL_DETAIL = 1_000_000
_FULL_OUTPUT_CHARS = 100_000
_ICONS = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "inconclusive": "⚠️ inconclusive",
    "improved": "🟢 improved",
    "error": "💥 error",
    "n/a": "—",
}


# What starts a block in Markdown at the beginning of a line: a heading, quote, list item, thematic
# break, setext underline, code fence or table row. Untrusted text that begins with one is escaped.
_BLOCK_START = re.compile(r"^[#>+*=~_|-]")
_AUTOLINK = re.compile(r"(?i)\b(https?:|ftp:|www)(//|\.)")


def _inline(value: Any, limit: int) -> str:
    """One line of at most `limit` characters: newlines and runs of whitespace become one space."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _inert(text: str) -> str:
    """No HTML, links, images or @mention pings, and no block markup at the start."""
    text = html.escape(text, quote=False).replace("[", "\\[").replace("]", "\\]")
    # A number that would start an ordered list: escape its "." or ")" instead.
    text = re.sub(r"^(\d{1,9})([.)])(?=\s|$)", r"\1\\\2", text)
    if _BLOCK_START.match(text):
        text = "\\" + text
    # GitHub turns bare `https://...` and `www.` into links: a zero-width space keeps them text.
    text = _AUTOLINK.sub(lambda m: m.group(1) + "\u200b" + m.group(2), text)
    # A zero-width joiner after "@" keeps the text readable and stops GitHub notifying the login.
    return re.sub(r"@(?=\w)", "@\u200d", text)


def md_cell(value: Any, limit: int = 200) -> str:
    """Model or user text made safe inside a Markdown table cell: one line, no HTML, no table
    breaks, no @mention pings, no code spans, no block start, at most `limit` characters."""
    return _inert(_inline(value, limit).replace("|", "\\|").replace("`", "\\`"))


def md_code(value: Any, limit: int = 200) -> str:
    """Untrusted text as an inline code span (ids, names): inside one nothing is markup, as long as no
    backtick ends it; a "|" is escaped, as GitHub splits table cells even inside code spans."""
    return "`" + _inline(str(value).replace("`", "'"), limit).replace("|", "\\|") + "`"


def md_text(value: Any, limit: int = 2000) -> str:
    """Text outside tables (replies, reasons): one line, no HTML, no block start, no @mention pings;
    code spans kept."""
    return _inert(_inline(value, limit))


def located(text: Any, blob_url: str | None, limit: int = 500) -> str:
    """A problem as a list item's text; its `path:line` a link to that line when `blob_url` is given
    (the file tree at the evaluated revision, e.g. `https://github.com/o/r/blob/<sha>`), else plain."""
    path, line = getattr(text, "path", None), getattr(text, "line", None)
    where = f"{path}:{line}"
    if blob_url is None or not path or not line or not str(text).startswith(where):
        return md_cell(text, limit)
    link = f"{blob_url.rstrip('/')}/{quote(path)}#L{line}"
    rest = str(text).removeprefix(where)
    # md_cell trims: the space before "(row n)" is put back.
    return f"[{md_code(where)}]({link}){' ' if rest.startswith(' ') else ''}{md_cell(rest, limit)}"


def pct(rate: float | None, digits: int = 1) -> str:
    return "—" if rate is None else f"{rate * 100:.{digits}f}%"


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def usd(value: float | None) -> str:
    if value is None:
        return "price unknown"
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def signed(value: float | None, unit: str, digits: int = 1) -> str:
    if value is None:
        return "—"
    space = " " if unit == "pp" else ""
    return f"{value:+.{digits}f}{space}{unit}"


def short_ref(ref: str) -> str:
    """A commit SHA as GitHub shows it (7 characters); branch and tag names as they are."""
    return ref[:7] if re.fullmatch(r"[0-9a-f]{40}", ref) else ref


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M")


def yaml_value(value: Any) -> str:
    """A value as one line of YAML flow style, quoted only where YAML needs it (`.evalbot.yml` drafts)."""
    import yaml

    text = str(yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 16))
    text = text.removesuffix("\n...\n").strip()
    # YAML folds a line break inside a quoted scalar onto the next line; JSON's escapes keep it on one.
    return json.dumps(value) if any(c in text for c in "\n\x85\u2028\u2029") else text


def icon(verdict: str) -> str:
    return _ICONS.get(verdict, verdict)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=False,  # Markdown, not HTML: untrusted text goes through md_cell instead
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        md=md_cell,
        code=md_code,
        text=md_text,
        pct=pct,
        seconds=seconds,
        usd=usd,
        signed=signed,
        icon=icon,
        ref=short_ref,
        utc=utc,
        yaml=yaml_value,
        located=located,
    )
    # Why a latency or cost row is inconclusive: too few pairs, or a bound short of the threshold.
    env.globals["min_ratio_pairs"] = MIN_RATIO_PAIRS
    return env


def render_template(name: str, **data: Any) -> str:
    """Any template of report_templates/ with the report filters (`md`, `pct`, `usd`, ...)."""
    return _environment().get_template(name).render(**data)


def utf8_size(text: str) -> int:
    return len(text.encode())


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest start of `text` whose UTF-8 fits `max_bytes`: cut between characters, never inside one."""
    data = text.encode()
    # The text was whole UTF-8, so the only broken sequence is the one the cut split at the end.
    return text if len(data) <= max_bytes else data[: max(0, max_bytes)].decode(errors="ignore")


def render_markdown(
    report: Report, template: str = "report.md.j2", max_bytes: int = MAX_MARKDOWN_BYTES, blob_url: str | None = None
) -> str:
    """The report as Markdown. Detail sections shrink until its UTF-8 fits `max_bytes`; the summary never does.

    `blob_url` (plain data, e.g. `https://github.com/o/r/blob/<head sha>`) links each problem's file and
    line; None (the CLI) names them without links.
    """
    tpl = _environment().get_template(template)
    text = ""
    for limit in _DETAIL_LIMITS:
        output_limit = 300 if limit >= 20 else 120
        text = tpl.render(report=report, detail_limit=limit, output_limit=output_limit, blob_url=blob_url)
        if utf8_size(text) <= max_bytes:
            return text
    note = "\n\n…(report cut to fit GitHub's size limit)\n"
    return cut_utf8(text, max_bytes - utf8_size(note)) + note


def render_full_markdown(report: Report, blob_url: str | None = None) -> str:
    """The report as Markdown with every detail row and whole answers: no size limit applies (the run
    page shows it, not GitHub)."""
    tpl = _environment().get_template("report.md.j2")
    return tpl.render(report=report, detail_limit=_FULL_DETAIL, output_limit=_FULL_OUTPUT_CHARS, blob_url=blob_url)


def report_dict(report: Report) -> dict[str, Any]:
    """The report's numbers as plain data (the JSON format)."""
    data = dataclasses.asdict(report)
    data["verdict"] = report.verdict
    data["exit_code"] = report.exit_code
    if report.spend is not None:
        data["spend"]["per_success_usd"] = report.spend.per_success_usd
    data["inconclusive"] = [dataclasses.asdict(breach) for breach in report.inconclusive]
    for suite_data, suite in zip(data["suites"], report.suites, strict=True):
        suite_data["verdict"] = suite.verdict
        for key in ("base", "head"):
            variant = suite_data.get(key)
            if variant is not None:
                for result, obj in zip(variant["results"], getattr(suite, key).results, strict=True):
                    result["passed"], result["hallucinated"] = obj.passed, obj.hallucinated
    for adversarial_data, adversarial in zip(data["adversarial"], report.adversarial, strict=True):
        adversarial_data["failed"] = adversarial.failed
    return data


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False)
