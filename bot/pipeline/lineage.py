"""Data lineage: each dataset row's origin — the commit and pull request that last changed it (git
history, `evalbot lineage`) and the source the row names (`lineage: {source_field, required}`, a gate)."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import regex

from bot.errors import InputError
from bot.pipeline.config import Config, Lineage
from bot.pipeline.datasets import Dataset
from bot.pipeline.files import read_config, read_dataset
from bot.pipeline.source import GitSource

# The pull request a commit subject names: a squash merge's "Title (#123)", a merge's "Merge pull request #123".
_SQUASH = regex.compile(r"\(#(\d+)\)\s*$")
_MERGE = regex.compile(r"^Merge pull request #(\d+)")
# Merge commits looked at for one commit's pull request: the one that merged it is among the first after it.
MAX_MERGES_SEARCHED = 200


# What the change under evaluation did to a row: added it, or changed its fields.
RowChange = Literal["added", "changed"]


@dataclass(frozen=True)
class CaseOrigin:
    """What a run knows of a case's origin: the source its row names (None: none), and whether the
    change under evaluation added or changed the row (None: the row is as the base has it)."""

    source: str | None
    change: RowChange | None = None


@dataclass
class LineageCheck:
    """The lineage gate of one suite: the rows that name no source."""

    suite: str
    dataset: str
    source_field: str
    required: bool
    rows: int
    # (case id, line) of each row whose `source_field` is missing or empty.
    missing: list[tuple[str, int]] = field(default_factory=list)
    # Each case's origin, by case id: shown on the run page.
    origins: dict[str, CaseOrigin] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.required and bool(self.missing)

    def annotations(self) -> list[tuple[str, int, Literal["failure", "warning"], str, str]]:
        """(path, line, level, title, message) of each row without a source: a failure when required."""
        level: Literal["failure", "warning"] = "failure" if self.required else "warning"
        message = f"no `{self.source_field}`: where this row comes from is not recorded"
        return [(self.dataset, line, level, f"Row {case_id} has no source", message) for case_id, line in self.missing]


def row_changes(head: Dataset, base: Dataset | None) -> dict[str, RowChange]:
    """The rows of `head` that are not in `base` (by case id) or whose fields differ there."""
    before = {case.id: case.fields for case in base.cases} if base is not None else {}
    return {
        case.id: "added" if case.id not in before else "changed"
        for case in head.cases
        if before.get(case.id) != case.fields
    }


def check_sources(
    suite: str, dataset: Dataset, lineage: Lineage, changes: dict[str, RowChange] | None = None
) -> LineageCheck:
    """The rows of `dataset` that do not carry `lineage.source_field` (absent, null or blank), and each
    row's origin (its source, and its change from `changes`, see `row_changes`)."""
    result = LineageCheck(suite, dataset.path, lineage.source_field, lineage.required, len(dataset.cases))
    for case in dataset.cases:
        value = case.fields.get(lineage.source_field)
        named = value is not None and bool(str(value).strip())
        if not named:
            result.missing.append((case.id, case.line))
        result.origins[case.id] = CaseOrigin(str(value) if named else None, (changes or {}).get(case.id))
    return result


@dataclass(frozen=True)
class RowOrigin:
    """Where one row comes from: the commit that last changed its lines, its pull request, its source."""

    id: str
    line: int
    commit: str | None
    author_date: str | None
    pull_request: int | None
    source: str | None


def pull_request_of(subject: str) -> int | None:
    """The pull request number a commit subject names (squash or merge commit), or None."""
    found = _SQUASH.search(subject) or _MERGE.search(subject)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class _Commit:
    sha: str
    author_time: int
    subject: str


def row_origins(repo: Path, rev: str, dataset: Dataset, source_field: str) -> list[RowOrigin]:
    """Each row's origin from `git blame` of the dataset at `rev`: the newest commit among the row's lines,
    and the pull request its subject names, else the first pull request merge that brought it into `rev`.

    Args:
        repo: the repository's working directory.
        rev: the revision the dataset was read at.
        dataset: the dataset as parsed at `rev` (rows and their first lines).
        source_field: the row field naming the row's source.

    Raises:
        InputError: when git cannot blame the file at `rev`.
    """
    by_line = _blame(repo, rev, dataset.path)
    starts = sorted(case.line for case in dataset.cases)
    ends = {start: nxt for start, nxt in zip(starts, [*starts[1:], len(by_line) + 1], strict=True)}
    pulls: dict[str, int | None] = {}
    origins = []
    for case in dataset.cases:
        lines = [by_line[n - 1] for n in range(case.line, ends[case.line]) if 0 < n <= len(by_line)]
        newest = max(lines, key=lambda c: c.author_time, default=None)
        pull = None
        if newest is not None:
            if newest.sha not in pulls:
                pulls[newest.sha] = pull_request_of(newest.subject) or _merged_by(repo, rev, newest.sha)
            pull = pulls[newest.sha]
        source = case.fields.get(source_field)
        origins.append(
            RowOrigin(
                case.id,
                case.line,
                newest.sha if newest else None,
                datetime.fromtimestamp(newest.author_time, UTC).isoformat() if newest else None,
                pull,
                None if source is None else str(source),
            )
        )
    return origins


async def dataset_lineage(repo: Path, rev: str, path: str) -> tuple[list[RowOrigin], LineageCheck]:
    """Every row's origin in the dataset `path` at `rev`, and the rows that name no source, under the
    `lineage:` (and `id_field`) of the suite at `rev` whose dataset it is (defaults when none is).

    Raises:
        InputError: when `rev`, the dataset or `.evalbot.yml` cannot be read, or git cannot blame it.
    """
    source = GitSource(repo)
    sha = source.resolve(rev)
    config = await read_config(source, sha) or Config()
    suite = next((s for s in config.suites if s.dataset == path), None)
    lineage = (suite.lineage if suite else None) or Lineage()
    dataset = await read_dataset(source, sha, path, config.limits, id_field=suite.id_field if suite else None)
    if dataset is None:
        raise InputError(f"no such file at {rev}", path)
    origins = await asyncio.to_thread(row_origins, repo, sha, dataset, lineage.source_field)
    return origins, check_sources(suite.name if suite else "", dataset, lineage)


def _blame(repo: Path, rev: str, path: str) -> list[_Commit]:
    """The commit that last changed each line of `path` at `rev`, in line order."""
    out = _git(repo, "blame", "--line-porcelain", rev, "--", path)
    commits: list[_Commit] = []
    sha, time, subject = "", 0, ""
    for line in out.splitlines():
        if line.startswith("\t"):
            commits.append(_Commit(sha, time, subject))
        elif regex.match(r"^[0-9a-f]{40} ", line):
            sha = line.split(" ", 1)[0]
        elif line.startswith("author-time "):
            time = int(line.split(" ", 1)[1])
        elif line.startswith("summary "):
            subject = line.split(" ", 1)[1]
    return commits


def _merged_by(repo: Path, rev: str, sha: str) -> int | None:
    """The pull request whose merge commit brought `sha` into `rev`: the oldest merge after `sha` whose
    first parent (the branch merged into) does not have it yet. A merged branch keeps its own commits,
    so blame names them and not the merge; a commit made on the main line has no such merge."""
    out = _git(repo, "log", "--merges", "--ancestry-path", "--reverse", "--format=%H %P%x00%s", f"{sha}..{rev}")
    for entry in out.splitlines()[:MAX_MERGES_SEARCHED]:
        shas, _, subject = entry.partition("\0")
        first_parent = shas.split()[1]
        if not _is_ancestor(repo, sha, first_parent):
            return pull_request_of(subject)
    return None


def _is_ancestor(repo: Path, commit: str, of: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, of]).returncode == 0


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, encoding="utf-8", errors="replace"
    )
    if result.returncode != 0:
        raise InputError(f"git {args[0]} failed: {result.stderr.strip()}")
    return result.stdout
