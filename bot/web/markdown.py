"""The stored report's Markdown as HTML for the run page.

The report escapes every text it did not write itself (render.py's `md` filters); the only HTML its
templates write is `<details>`/`<summary>`. Those pass; any other HTML is shown as text, so a model's
answer cannot put markup on the page even if an escape were missed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

_ALLOWED_HTML = re.compile(r"\s*(<details( open)?><summary>[^<>]*</summary>|</details>)\s*")


def _html(_renderer: Any, tokens: Sequence[Token], idx: int, _options: Any, _env: Any) -> str:
    content = tokens[idx].content
    return content if _ALLOWED_HTML.fullmatch(content) else html.escape(content)


@cache
def _parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    parser.add_render_rule("html_block", _html)
    parser.add_render_rule("html_inline", _html)
    return parser


def report_html(markdown: str) -> str:
    return str(_parser().render(markdown))
