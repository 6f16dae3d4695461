"""The README is a guide under 250 lines, and every relative link of the documentation resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
DOCS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
PAGES = ["configuration", "formats", "gate", "github-app", "trust-model", "faults", "history", "benchmarks"]

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def _outside_fences(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    kept: list[str] = []
    fence = ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if match and not fence:
            fence = match.group(1)
        elif match and match.group(1).startswith(fence) and not match.group(2).strip():
            fence = ""  # a fence closes with a bare marker of its kind, at least as long as the opening one
        elif not fence:
            kept.append(line)
    return kept


def relative_links(path: Path) -> list[str]:
    """Every link target of a Markdown file that is not a URL (anchors within the page included)."""
    # In code, fenced or inline, a bracket is code, not a link.
    prose = "\n".join(re.sub(r"`[^`]*`", "", line) for line in _outside_fences(path.read_text(encoding="utf-8")))
    targets = LINK.findall(prose)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    for line in _outside_fences(path.read_text(encoding="utf-8")):
        match = HEADING.match(line.replace("`", ""))
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def test_readme_is_a_guide_under_the_line_limit() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the reference belongs in docs/"


def test_every_reference_page_exists_and_is_linked_from_the_readme() -> None:
    readme = set(relative_links(ROOT / "README.md"))
    for page in PAGES:
        assert (ROOT / "docs" / f"{page}.md").is_file(), page
        assert f"docs/{page}.md" in {t.split("#")[0] for t in readme}, f"README.md does not link docs/{page}.md"
    assert "docs/run-page.png" in readme
    assert "CONTRIBUTING.md" in readme


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file, _, anchor = target.partition("#")
        linked = (doc.parent / file) if file else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def test_the_link_finder_sees_links_and_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A `b`: c, d's e\n\n## A b c d e\n\n"
        'see [a](a.md) and ![b](img/b.png "t") `[c](c.md)` [d](https://x.y/d) [e](#e)\n'
        "````markdown\n```\n[f](f.md)\n# not a heading\n```\n[g](g.md)\n````\n[h](h.md#x)\n"
    )
    assert relative_links(page) == ["a.md", "img/b.png", "#e", "h.md#x"]
    assert anchors(page) == {"a-b-c-ds-e", "a-b-c-d-e"}
