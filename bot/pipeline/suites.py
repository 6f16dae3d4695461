"""Where a suite entry becomes what the pipeline runs: a `SuiteInput` (prompt, rows, graders, files read).

Nothing after this module knows which format a suite's files are in. A reader per suite kind
(`READERS`, keyed by `Suite.kind`) reads its files in place at one revision; a new format adds a reader.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from bot.errors import InputError
from bot.pipeline.config import GraderSpec, Limits, Suite
from bot.pipeline.datasets import Case, Dataset
from bot.pipeline.files import read_dataset, read_file
from bot.pipeline.formats import promptfoo
from bot.pipeline.langchain import is_langchain, parse_langchain
from bot.pipeline.prompts import Messages, MessageTemplate, Prompt, parse_prompt
from bot.pipeline.prompty import parse_prompty
from bot.pipeline.source import Source
from bot.pipeline.templates import TemplateError, TemplateFormat, TemplateLimitError, compile_template
from bot.pipeline.yamlio import load_yaml

# A prompt-less suite (OpenAI-evals samples) sends each row's `input`: a chat list, or a text as one user message.
INPUT_FIELD = "input"
# Plain-text prompt files, and the template format their extension implies (the suite's `template_format` wins).
TEXT_PROMPT_FORMATS: dict[str, TemplateFormat] = {
    ".txt": "fstring",
    ".md": "fstring",
    ".j2": "jinja2",
    ".jinja": "jinja2",
    ".jinja2": "jinja2",
    ".mustache": "mustache",
}
# All rows of one prompt: past this, a template is stopped even if each row renders within its own budget.
MAX_RENDER_TOTAL_S = 20.0
# Rows named per prompt that cannot be rendered; the rest are counted.
MAX_RENDER_ERRORS = 20


@dataclass(frozen=True)
class SuiteInput:
    """What a suite entry is at one revision, whatever format its files are in.

    `prompt` and `dataset` are None when they cannot be read; `errors` says why (each with file and line).
    """

    prompt: Prompt | None
    dataset: Dataset | None
    # The graders the format defines (promptfoo's assertions); None: the suite's own `graders:`.
    graders: tuple[GraderSpec, ...] | None = None
    # Every repository file read to make this input: a change to any of them makes the suite affected.
    files: tuple[str, ...] = ()
    # What the format asks for that evalbot does not run, each naming its file and line (listed in the report).
    not_run: tuple[str, ...] = ()
    errors: tuple[InputError, ...] = ()
    # Models the format compares side by side with the prompt's own (promptfoo's other providers).
    models: tuple[str, ...] = ()


SuiteReader = Callable[[Source, str, Suite, Limits], Awaitable[SuiteInput]]


async def read_files_suite(source: Source, ref: str, suite: Suite, limits: Limits) -> SuiteInput:
    """A suite of a prompt file (any format `read_prompt` knows, or none) and a dataset file."""
    errors: list[InputError] = []
    prompt = dataset = None
    try:
        prompt = await read_prompt(source, ref, suite, limits)
        if prompt is None:
            errors.append(InputError(f"prompt file of suite {suite.name!r} does not exist", suite.prompt))
    except InputError as exc:
        errors.append(exc)
    assert suite.dataset is not None  # Suite's validator: a files suite has a dataset
    try:
        dataset = await read_dataset(source, ref, suite.dataset, limits, id_field=suite.id_field)
        if dataset is None:
            errors.append(InputError(f"dataset of suite {suite.name!r} does not exist", suite.dataset))
        elif not dataset.cases:
            errors.append(InputError(f"dataset of suite {suite.name!r} has no rows", suite.dataset))
    except InputError as exc:
        errors.append(exc)
    for path in suite.watch:
        # A watched path that names nothing would watch nothing, silently: a typo is an error.
        try:
            if await read_file(source, ref, path, limits) is None:
                errors.append(InputError(f"a file in `watch:` of suite {suite.name!r} does not exist", path))
        except InputError as exc:
            errors.append(exc)
    return SuiteInput(prompt, dataset, files=tuple(suite.paths()), errors=tuple(errors))


async def read_promptfoo_suite(source: Source, ref: str, suite: Suite, limits: Limits) -> SuiteInput:
    """A promptfoo config and every file it names, read in place (`bot.pipeline.formats.promptfoo`)."""
    assert suite.promptfoo is not None  # Suite.kind
    path = suite.promptfoo

    async def read(other: str) -> str | None:
        return await read_file(source, ref, other, limits)

    async def glob(pattern: str) -> list[str]:
        return await source.list_files(ref, promptfoo.glob_root(pattern))

    try:
        text = await read(path)
        if text is None:
            raise InputError(f"promptfoo config of suite {suite.name!r} does not exist", path)
        config = await promptfoo.parse_promptfoo(text, path, read, glob)
        built = await asyncio.to_thread(promptfoo.as_suite, config)
    except InputError as exc:
        return SuiteInput(None, None, files=(path,), errors=(exc,))
    errors: tuple[InputError, ...] = ()
    if len(built.dataset.cases) > limits.max_cases:
        message = (
            f"{len(built.dataset.cases)} cases ({len(config.prompts)} prompts × {len(config.tests)} tests), "
            f"more than `limits.max_cases` ({limits.max_cases})"
        )
        errors = (InputError(message, path),)
    notes = (*built.not_run, *built.warnings)
    return SuiteInput(built.prompt, built.dataset, built.graders, built.files, notes, errors, built.models)


# One reader per `Suite.kind`.
READERS: dict[str, SuiteReader] = {"files": read_files_suite, "promptfoo": read_promptfoo_suite}


async def read_suite(source: Source, ref: str, suite: Suite, limits: Limits) -> SuiteInput:
    """The suite's prompt, rows and graders at `ref`, read in place by the reader of its kind."""
    return await READERS[suite.kind](source, ref, suite, limits)


async def read_prompt(source: Source, ref: str, suite: Suite, limits: Limits) -> Prompt | None:
    """The suite's prompt at `ref` (None when its file does not exist there), with the suite's `model`,
    `params` and `template_format` applied; a suite without a prompt file sends each row's `input`."""
    if suite.prompt is None:
        assert suite.dataset is not None and suite.model is not None  # Suite's validator
        template = compile_template("{" + INPUT_FIELD + "}", "fstring")
        prompt = Prompt(suite.dataset, suite.model, (MessageTemplate("user", template),))
    else:
        text = await read_file(source, ref, suite.prompt, limits)
        if text is None:
            return None
        prompt = await asyncio.to_thread(parse_prompt_file, text, suite.prompt, suite.template_format, suite.model)
    return _with_suite_settings(prompt, suite)


def parse_prompt_file(text: str, path: str, template_format: TemplateFormat | None, model: str | None) -> Prompt:
    """A prompt file in any format evalbot reads, chosen by its extension (and, for YAML/JSON, its keys).

    Args:
        text: the file's text.
        path: its path in the repository.
        template_format: the suite's `template_format` (a plain-text file cannot say its own).
        model: the suite's `model` (plain-text and LangChain files carry none).

    Raises:
        InputError: naming the file and line of what cannot be read.
    """
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix == ".prompty":
        return parse_prompty(text, path, model)
    if suffix in TEXT_PROMPT_FORMATS:
        return _plain_text(text, path, template_format or TEXT_PROMPT_FORMATS[suffix], model)
    if suffix not in (".yaml", ".yml", ".json"):
        known = ", ".join([".yaml", ".json", ".prompty", *TEXT_PROMPT_FORMATS])
        raise InputError(f"unknown prompt file type {suffix or '(none)'!r}: evalbot reads {known}", path)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", path, exc.lineno) from None
        if is_langchain(data):
            return parse_langchain(data, None, path, model)
        raise InputError("a JSON prompt file must be a LangChain prompt (`_type: prompt`)", path, 1)
    data, node = load_yaml(text, path)
    if is_langchain(data):
        return parse_langchain(data, node, path, model)
    return parse_prompt(text, path, template_format)


def _plain_text(text: str, path: str, fmt: TemplateFormat, model: str | None) -> Prompt:
    if model is None:
        raise InputError("a plain-text prompt carries no model: set `model:` on its suite in .evalbot.yml", path)
    try:
        template = compile_template(text, fmt)
    except TemplateError as exc:
        hint = " (set the suite's `template_format` if the file is not in this format)"
        raise InputError(f"{fmt} template: {exc.message}{hint}", path, exc.line) from None
    return Prompt(path, model, (MessageTemplate("user", template, 1),), content={"model": model, "template": text})


def _with_suite_settings(prompt: Prompt, suite: Suite) -> Prompt:
    """The suite's `model` and `params` over the prompt file's own (they are what the app is configured with)."""
    settings: dict[str, Any] = {"model": suite.model} if suite.model is not None else {}
    settings.update(suite.params.model_dump(exclude_none=True))
    if not settings:
        return prompt
    return replace(prompt, content={**prompt.content, **settings}, **settings)


@dataclass
class Rendered:
    """The requests a prompt makes for each case it can render, and the rows it cannot."""

    requests: dict[str, Messages] = field(default_factory=dict)
    errors: list[InputError] = field(default_factory=list)


def render_cases(prompt: Prompt, cases: tuple[Case, ...], dataset: str, which: str = "") -> Rendered:
    """Render `prompt` for every case (off the event loop: call through `asyncio.to_thread`).

    Args:
        prompt: the prompt.
        cases: the rows.
        dataset: the dataset's path, for the errors.
        which: "base " or "head " when both are rendered, for the errors.

    A row the prompt cannot render is an InputError at the row's dataset line that names the template's
    file and line. A template over its budget stops at its first row: the same would happen on every row.
    """
    result = Rendered()
    started = time.monotonic()
    for case in cases:
        if not prompt.renders(case.fields):
            continue
        try:
            result.requests[case.id] = prompt.render(case.fields)
        except TemplateError as exc:
            where = f"{prompt.path}:{exc.line}" if exc.line else prompt.path
            result.errors.append(
                InputError(
                    f"the {which}prompt cannot be rendered for row {case.id!r}: {exc.message} ({where})",
                    dataset,
                    case.line,
                    case.row,
                )
            )
            if isinstance(exc, TemplateLimitError) or len(result.errors) >= MAX_RENDER_ERRORS:
                break
        if time.monotonic() - started > MAX_RENDER_TOTAL_S:
            result.errors.append(
                InputError(
                    f"rendering the {which}prompt for every row takes more than {MAX_RENDER_TOTAL_S:g} s", prompt.path
                )
            )
            break
    return result


def request_key(*requests: Messages | None) -> str:
    """Canonical text of the requests a case makes (one per prompt): cases with equal keys are one sample."""
    return json.dumps(requests, sort_keys=True, ensure_ascii=False)


def fields_used(prompt_variables: Iterable[str], graders: list[GraderSpec]) -> set[str]:
    """Row fields read by the prompts' templates or by graders."""
    used = set(prompt_variables)
    for grader in graders:
        for attr in ("field", "context_field"):
            value = getattr(grader, attr, None)
            if isinstance(value, str):
                used.add(value)
    return used
