"""`evalbot init`: find prompts and datasets in every format evalbot reads, in place, and draft a
commented `.evalbot.yml` whose suites point at those files as they are (no copies)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import InputError
from bot.pipeline.config import CONFIG_PATH
from bot.pipeline.datasets import dataset_format, id_field_candidates, parse_dataset
from bot.pipeline.langchain import is_langchain
from bot.pipeline.source import LFS_POINTER
from bot.pipeline.suites import INPUT_FIELD, TEXT_PROMPT_FORMATS, parse_prompt_file
from bot.pipeline.templates import TemplateFormat, chat_messages, compile_template
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
# The names teams give the reference answer, in the order `init` prefers them.
REFERENCE_FIELDS = ("expected", "ideal", "answer", "label", "reference", "ground_truth", "__expected")
# A reference this short (every sampled one) is a label: compared whole, trimmed and case-insensitively.
SHORT_LABEL_CHARS = 40
# Where a model must be named in the suite: `init` proposes this one, in a comment saying so.
PROPOSED_MODEL = "openai/gpt-4o-mini"
# OpenAI evals' basic eval classes and the evalbot grader with their semantics.
OPENAI_EVALS_GRADERS: dict[str, dict[str, Any]] = {
    "evals.elsuite.basic.match:Match": {"type": "starts_with"},
    "evals.elsuite.basic.includes:Includes": {"type": "contains", "match": "any", "ignore_case": False},
    "evals.elsuite.basic.fuzzy_match:FuzzyMatch": {"type": "fuzzy_match"},
}
_PROMPTFOO_CONFIGS = {"promptfooconfig.yaml", "promptfooconfig.yml"}


@dataclass(frozen=True)
class FoundPrompt:
    """A prompt file in a format evalbot reads, and the row fields its templates use."""

    path: str
    placeholders: tuple[str, ...]
    # Why it cannot be read as it is (validate names the line), else None.
    problem: str | None = None
    kind: str = "evalbot"  # evalbot, prompty, langchain, text
    # The file names no model evalbot can call: the suite must (`init` proposes one).
    needs_model: bool = False
    # A template format the suite must name (a .txt file written with `{{var}}`).
    template_format: TemplateFormat | None = None
    # Fields with a default in the file (Prompty `inputs`): a row may leave them out.
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class FoundDataset:
    """A file of rows, from the sample of its first rows."""

    path: str
    fields: tuple[str, ...]  # in every sampled row
    rows: int
    id_field: str | None
    has_context: bool
    # The reference answer's field, and whether every sampled one is a short label (or a list of them).
    reference: str | None = None
    short_labels: bool = False
    # Rows carry a chat list (or text) in `input`: the request itself (OpenAI-evals samples).
    chat_input: bool = False


@dataclass(frozen=True)
class FoundEval:
    """An OpenAI-evals registry entry: its samples file and the grader its eval class means."""

    path: str
    name: str
    samples: str
    grader: dict[str, Any] | None
    eval_class: str


@dataclass(frozen=True)
class SuiteDraft:
    name: str
    prompt: FoundPrompt | None
    dataset: FoundDataset | None
    promptfoo: str | None = None
    # The grader proposed for the dataset's reference answer, with its why (a comment).
    grader: dict[str, Any] | None = None
    grader_note: str = ""
    # The registry file a prompt-less suite came from (watched: editing it changes the eval).
    registry: str | None = None

    @property
    def active(self) -> bool:
        return self.promptfoo is not None or self.dataset is not None

    @property
    def needs_model(self) -> bool:
        return self.promptfoo is None and (self.prompt is None or self.prompt.needs_model)


@dataclass
class Scan:
    """What the walk found, and what it looked at but could not use."""

    prompts: list[FoundPrompt] = field(default_factory=list)
    datasets: list[FoundDataset] = field(default_factory=list)
    evals: list[FoundEval] = field(default_factory=list)
    promptfoo: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # "path: reason" of files that look like datasets
    passed: list[str] = field(default_factory=list)  # "path: reason" of files that look like prompts
    truncated: bool = False  # stopped at MAX_FILES


def scan(root: Path) -> Scan:
    """Prompts, datasets, eval registries and promptfoo configs under `root`: hidden directories,
    dependencies and virtualenvs skipped."""
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
            if path == CONFIG_PATH or file.is_symlink():
                continue
            _classify(file, path, found)
    return found


def _classify(file: Path, path: str, found: Scan) -> None:
    suffix = file.suffix.lower()
    if file.name in _PROMPTFOO_CONFIGS:
        found.promptfoo.append(path)
        return
    if suffix == ".prompty" or (suffix in TEXT_PROMPT_FORMATS and _looks_like_a_prompt(path)):
        prompt = _prompt(file, path)
        if prompt is not None:
            found.prompts.append(prompt)
        else:
            # Notes beside the prompts, or a prompt that reads no row field (a suite with `static: true`).
            found.passed.append(f"{path}: no template variable ({{name}} or {{{{ name }}}}) in it")
        return
    if suffix not in _DATASET_SUFFIXES:
        return
    if suffix in (".yaml", ".yml", ".json"):
        data = _structured(file, path)
        if isinstance(data, dict):
            if _registry_entry(data, path, found):
                return
            if is_langchain(data) or _is_evalbot_prompt(data):
                prompt = _prompt(file, path)
                if prompt is not None:
                    found.prompts.append(prompt)
                return
    try:
        dataset = _dataset(file, path)
    except InputError as exc:
        found.unread.append(str(exc))
        return
    if dataset is not None:
        found.datasets.append(dataset)


def _walk_into(directory: Path, depth: int) -> bool:
    name = directory.name
    if depth + 1 > MAX_DEPTH or name.startswith(".") or name in _SKIPPED_DIRS or directory.is_symlink():
        return False
    return not (directory / "pyvenv.cfg").exists()  # a virtualenv under any name


def _looks_like_a_prompt(path: str) -> bool:
    # Text, Markdown and template files are prompts only where their path says so (`prompts/`,
    # `x.prompt.j2`): a README or a web page template is not one.
    return "prompt" in path.lower()


def _structured(file: Path, path: str) -> Any:
    if file.stat().st_size > MAX_PROMPT_BYTES:
        return None
    try:
        text = file.read_text(encoding="utf-8")
        return json.loads(text) if path.endswith(".json") else load_yaml(text, path)[0]
    except (InputError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _is_evalbot_prompt(data: dict[str, Any]) -> bool:
    return isinstance(data.get("model"), str) and ("user_prompt_template" in data or "messages" in data)


def _prompt(file: Path, path: str) -> FoundPrompt | None:
    """The prompt file's variables; a file that does not read is kept with its problem (validate names the
    line); None for a text file with no variable in any template format."""
    suffix = file.suffix.lower()
    kind = "prompty" if suffix == ".prompty" else "text" if suffix in TEXT_PROMPT_FORMATS else "evalbot"
    if file.stat().st_size > MAX_PROMPT_BYTES:
        return FoundPrompt(path, (), f"over {MAX_PROMPT_BYTES // 1024} KB, too large for a prompt file", kind)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return FoundPrompt(path, (), "not UTF-8 text", kind)
    if kind == "evalbot" and is_langchain(_structured(file, path)):
        kind = "langchain"
    fmt: TemplateFormat | None = None
    if kind == "text" and TEXT_PROMPT_FORMATS[suffix] == "fstring":
        fmt = _text_format(text)
        if fmt is None:
            return None
    try:
        prompt = parse_prompt_file(text, path, fmt, PROPOSED_MODEL)
    except InputError as exc:
        return FoundPrompt(path, (), exc.message, kind)
    needs_model = kind in ("text", "langchain")
    if kind == "prompty":
        try:
            parse_prompt_file(text, path, None, None)
        except InputError:
            needs_model = True  # its model configuration names no model litellm can call
    optional = tuple(prompt.defaults)
    return FoundPrompt(path, prompt.variables, None, kind, needs_model, fmt if fmt != "fstring" else None, optional)


def _text_format(text: str) -> TemplateFormat | None:
    """The format a plain-text prompt is written in: `{{var}}` is Jinja2 (or Mustache), `{var}` fstring."""
    formats: tuple[TemplateFormat, ...] = ("jinja2", "fstring")
    for fmt in formats:
        try:
            if compile_template(text, fmt).variables:
                return fmt
        except ValueError:
            continue
    return None


def _registry_entry(data: dict[str, Any], path: str, found: Scan) -> bool:
    """An OpenAI-evals registry file (`evals/registry/evals/*.yaml`): evals with `class` and `args.samples_jsonl`."""
    if "/registry/evals/" not in f"/{path}":
        return False
    registry = path.split("registry/evals/")[0] + "registry/data/"
    for name, spec in data.items():
        if not isinstance(spec, dict) or "class" not in spec:
            continue
        samples = (spec.get("args") or {}).get("samples_jsonl")
        eval_class = str(spec["class"])
        if isinstance(samples, str):
            found.evals.append(
                FoundEval(path, str(name), registry + samples, OPENAI_EVALS_GRADERS.get(eval_class), eval_class)
            )
    return True


def _dataset(file: Path, path: str) -> FoundDataset | None:
    """The file's first rows, or None when it is no list of objects (a config, a manifest).

    Raises:
        InputError: for a JSONL or CSV file that cannot be read, or a file too large to sample.
    """
    fmt = dataset_format(path)
    with file.open("rb") as handle:
        data = handle.read(SAMPLE_BYTES + 1)
    if data.startswith(LFS_POINTER.encode()):
        # OpenAI-evals registries keep their samples in Git LFS: a clone without `git lfs` has pointers.
        raise InputError("a Git LFS pointer, not the file: fetch it with `git lfs pull`, then run init again", path)
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
    reference = next((name for name in REFERENCE_FIELDS if name in fields), None)
    short = reference is not None and all(_is_short_label(row[reference]) for row in rows)
    chat = INPUT_FIELD in fields and all(
        chat_messages(row[INPUT_FIELD]) is not None or isinstance(row[INPUT_FIELD], str) for row in rows
    )
    return FoundDataset(
        path, fields, len(rows), candidates[0] if candidates else None, "context" in fields, reference, short, chat
    )


def _is_short_label(value: Any) -> bool:
    values = value if isinstance(value, list) and value else [value]
    return all(isinstance(v, str | int) and len(str(v).strip()) <= SHORT_LABEL_CHARS for v in values)


def _reference_grader(dataset: FoundDataset) -> tuple[dict[str, Any] | None, str]:
    """The grader proposed for the dataset's reference answer, and a comment saying why."""
    if dataset.reference is None:
        return None, ""
    if dataset.short_labels:
        return (
            {"type": "equals", "ignore_case": True},
            f"`{dataset.reference}` holds short labels: the answer must be one of them, trimmed and case-insensitive.",
        )
    return (
        {"type": "similarity", "threshold": 0.8},
        f"`{dataset.reference}` holds free text: the answer must mean much the same (embedding similarity).",
    )


def match(found: Scan) -> list[SuiteDraft]:
    """A suite per prompt (with the dataset whose rows cover its variables and whose name is closest),
    per OpenAI-evals registry entry, per dataset of chat `input` rows no prompt uses, per promptfoo config."""
    drafts = []
    names: set[str] = set()

    def name_for(path: str) -> str:
        name = _suite_name(path, names)
        names.add(name)
        return name

    claimed: set[str] = set()
    for prompt in found.prompts:
        needed = set(prompt.placeholders) - set(prompt.optional)
        covering = [d for d in found.datasets if not prompt.problem and needed <= set(d.fields)]
        covering.sort(key=lambda d: (-_shared_words(prompt.path, d.path), d.reference is None, -d.rows, d.path))
        dataset = covering[0] if covering else None
        grader, note = _reference_grader(dataset) if dataset is not None else (None, "")
        if dataset is not None:
            claimed.add(dataset.path)
        drafts.append(SuiteDraft(name_for(prompt.path), prompt, dataset, grader=grader, grader_note=note))
    by_path = {d.path: d for d in found.datasets}
    for entry in found.evals:
        dataset = by_path.get(entry.samples)
        if dataset is None:
            found.passed.append(
                f"{entry.path}: eval {entry.name}: its samples {entry.samples} were not found or not read"
            )
            continue
        claimed.add(dataset.path)
        note = f"OpenAI evals' {entry.eval_class.rsplit(':', 1)[-1]} on `ideal`."
        if entry.grader is None:
            found.passed.append(
                f"{entry.path}: eval {entry.name}: class {entry.eval_class} is not one evalbot maps "
                "(Match, Includes, FuzzyMatch): add its graders by hand"
            )
        drafts.append(
            SuiteDraft(name_for(entry.name), None, dataset, grader=entry.grader, grader_note=note, registry=entry.path)
        )
    for dataset in found.datasets:
        if dataset.chat_input and dataset.path not in claimed:
            grader, note = _reference_grader(dataset)
            drafts.append(SuiteDraft(name_for(dataset.path), None, dataset, grader=grader, grader_note=note))
    for dataset in found.datasets:
        if dataset.path not in claimed and not dataset.chat_input:
            found.passed.append(
                f"{dataset.path}: no prompt found reads its rows' fields ({', '.join(dataset.fields[:8])})"
            )
    for config in found.promptfoo:
        drafts.append(
            SuiteDraft(name_for(config.rsplit("/", 2)[-2] if "/" in config else "promptfoo"), None, None, config)
        )
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
        InputError: when `.evalbot.yml` exists already (it is never overwritten) or nothing to evaluate is found.
    """
    from bot.pipeline.render import render_template

    target = root / CONFIG_PATH
    if target.exists():
        message = "already exists; evalbot init never overwrites it (edit it, or move it away first)"
        raise InputError(message, str(target))
    found = scan(root)
    drafts = match(found)
    if not drafts:
        passed = [f"{note}" for note in found.passed + found.unread][:10]
        looked = "; walked past: " + "; ".join(passed) if passed else ""
        raise InputError(
            f"no prompt file found under {root} (evalbot's prompt YAML, .prompty, a LangChain prompt, a "
            f"template in a prompts/ directory, OpenAI-evals samples or a promptfooconfig.yaml){looked}; "
            "nothing written"
        )
    text = render_template(
        "evalbot.yml.j2",
        suites=drafts,
        unread=found.unread,
        passed=found.passed,
        truncated=found.truncated,
        max_files=MAX_FILES,
        proposed_model=PROPOSED_MODEL,
        reference_fields=REFERENCE_FIELDS,
    )
    # Exclusive creation: a config written since the check above is not overwritten either.
    with target.open("x", encoding="utf-8") as handle:
        handle.write(text)
    return drafts, found
