"""`evalbot init`: find prompt files and the datasets that fit them, and draft a commented `.evalbot.yml`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import InputError
from bot.pipeline.config import CONFIG_PATH
from bot.pipeline.datasets import dataset_format, id_field_candidates, parse_dataset
from bot.pipeline.prompts import placeholders
from bot.pipeline.yamlio import load_yaml

# The walk is bounded so that `init` in a monorepo answers in seconds, whatever lies below it.
MAX_FILES = 20_000
MAX_DEPTH = 8
# A prompt file is small; a dataset is sampled from its start (JSON and YAML must be read whole).
MAX_PROMPT_BYTES = 256 * 1024
SAMPLE_BYTES = 256 * 1024
SAMPLE_ROWS = 50
# Dependencies, caches and build output hold other people's YAML and JSON, never the team's prompts.
_SKIPPED_DIRS = {"node_modules", "site-packages", "__pycache__", "venv", "dist", "build"}
_DATASET_SUFFIXES = {".jsonl", ".ndjson", ".json", ".yaml", ".yml", ".csv"}


@dataclass(frozen=True)
class FoundPrompt:
    """A YAML file with `model` and `user_prompt_template`, and the fields its templates use."""

    path: str
    placeholders: tuple[str, ...]
    # Why its placeholders could not be read (validate names the line), else None.
    problem: str | None = None


@dataclass(frozen=True)
class FoundDataset:
    """A file of rows, from the sample of its first rows."""

    path: str
    fields: tuple[str, ...]  # in every sampled row
    rows: int
    id_field: str | None
    has_context: bool


@dataclass(frozen=True)
class SuiteDraft:
    name: str
    prompt: FoundPrompt
    dataset: FoundDataset | None

    @property
    def has_expected(self) -> bool:
        return self.dataset is not None and "expected" in self.dataset.fields


@dataclass
class Scan:
    """What the walk found, and what it looked at but could not use."""

    prompts: list[FoundPrompt] = field(default_factory=list)
    datasets: list[FoundDataset] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # "path: reason" of files that look like datasets
    truncated: bool = False  # stopped at MAX_FILES


def scan(root: Path) -> Scan:
    """Prompt files and datasets under `root`: hidden directories, dependencies and virtualenvs skipped."""
    found = Scan()
    seen = 0
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        depth = len(here.relative_to(root).parts)
        subdirs[:] = sorted(d for d in subdirs if _walk_into(here / d, depth))
        for name in sorted(files):
            seen += 1
            if seen > MAX_FILES:
                found.truncated = True
                return found
            file = here / name
            path = file.relative_to(root).as_posix()
            if path == CONFIG_PATH or file.suffix.lower() not in _DATASET_SUFFIXES or file.is_symlink():
                continue
            prompt = _prompt(file, path)
            if prompt is not None:
                found.prompts.append(prompt)
                continue
            try:
                dataset = _dataset(file, path)
            except InputError as exc:
                found.unread.append(str(exc))
                continue
            if dataset is not None:
                found.datasets.append(dataset)
    return found


def _walk_into(directory: Path, depth: int) -> bool:
    name = directory.name
    if depth + 1 > MAX_DEPTH or name.startswith(".") or name in _SKIPPED_DIRS or directory.is_symlink():
        return False
    return not (directory / "pyvenv.cfg").exists()  # a virtualenv under any name


def _prompt(file: Path, path: str) -> FoundPrompt | None:
    if file.suffix.lower() not in (".yaml", ".yml") or file.stat().st_size > MAX_PROMPT_BYTES:
        return None
    try:
        data, _node = load_yaml(file.read_text(encoding="utf-8"), path)
    except (InputError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        return None
    if not isinstance(data.get("user_prompt_template"), str):
        return None
    names: list[str] = []
    for key in ("system_prompt", "user_prompt_template"):
        if isinstance(data.get(key), str):
            try:
                names += [n for n in placeholders(data[key]) if n not in names]
            except ValueError as exc:
                return FoundPrompt(path, (), f"{key}: {exc}")
    return FoundPrompt(path, tuple(names))


def _dataset(file: Path, path: str) -> FoundDataset | None:
    """The file's first rows, or None when it is no list of objects (a config, a manifest).

    Raises:
        InputError: for a JSONL or CSV file that cannot be read, or a file too large to sample.
    """
    fmt = dataset_format(path)
    with file.open("rb") as handle:
        data = handle.read(SAMPLE_BYTES + 1)
    if fmt in ("jsonl", "csv"):
        # Whole lines only, and no more than the sample needs (a CSV header is one line more).
        whole = data[: data.rfind(b"\n") + 1] if len(data) > SAMPLE_BYTES else data
        data = b"".join(whole.splitlines(keepends=True)[: SAMPLE_ROWS + 1])
    elif len(data) > SAMPLE_BYTES:
        raise InputError(f"not sampled: init reads {fmt.upper()} datasets whole, up to {SAMPLE_BYTES} bytes", path)
    try:
        rows = [case.fields for case in parse_dataset(data.decode("utf-8"), path).cases[:SAMPLE_ROWS]]
    except (InputError, UnicodeDecodeError) as exc:
        if fmt in ("json", "yaml"):
            return None  # JSON and YAML files are mostly not datasets: no need to say why each is not
        raise exc if isinstance(exc, InputError) else InputError("not UTF-8 text", path) from None
    if not rows:
        return None
    fields = tuple(name for name in rows[0] if all(name in row for row in rows))
    candidates = id_field_candidates(rows)
    return FoundDataset(path, fields, len(rows), candidates[0] if candidates else None, "context" in fields)


def match(found: Scan) -> list[SuiteDraft]:
    """A suite per prompt, with the dataset whose rows cover its placeholders and whose name is closest."""
    drafts = []
    names: set[str] = set()
    for prompt in found.prompts:
        covering = [d for d in found.datasets if not prompt.problem and set(prompt.placeholders) <= set(d.fields)]
        covering.sort(key=lambda d: (-_shared_words(prompt.path, d.path), "expected" not in d.fields, -d.rows, d.path))
        name = _suite_name(prompt.path, names)
        names.add(name)
        drafts.append(SuiteDraft(name, prompt, covering[0] if covering else None))
    return drafts


def _words(path: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", Path(path).stem.lower()))


def _shared_words(a: str, b: str) -> int:
    return len(_words(a) & _words(b))


def _suite_name(path: str, taken: set[str]) -> str:
    base = "-".join(re.findall(r"[a-z0-9]+", Path(path).stem.lower())) or "suite"
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}-{number}"
    return name


def init(root: Path) -> tuple[list[SuiteDraft], Scan]:
    """Write a commented `.evalbot.yml` under `root` for the prompts and datasets found there.

    Args:
        root: the repository's root directory.

    Returns:
        The suites drafted (those without a dataset are written commented out) and what the walk found.

    Raises:
        InputError: when `.evalbot.yml` exists already (it is never overwritten) or no prompt file is found.
    """
    from bot.pipeline.render import render_template

    target = root / CONFIG_PATH
    if target.exists():
        message = "already exists; evalbot init never overwrites it (edit it, or move it away first)"
        raise InputError(message, str(target))
    found = scan(root)
    if not found.prompts:
        raise InputError(
            f"no prompt file found under {root} (a YAML file with `model` and `user_prompt_template`); nothing written"
        )
    drafts = match(found)
    text = render_template(
        "evalbot.yml.j2", suites=drafts, unread=found.unread, truncated=found.truncated, max_files=MAX_FILES
    )
    # Exclusive creation: a config written since the check above is not overwritten either.
    with target.open("x", encoding="utf-8") as handle:
        handle.write(text)
    return drafts, found
