"""promptfoo configs read in place: prompts, providers, tests and assertions, as promptfoo reads them.

A pure reader: the config's text and a function that reads another file at the same commit give a
`PromptfooConfig`. Nothing here runs a model, a script or a webhook: assertions that would run code
(`javascript`, `python`, `webhook`, ...) or that evalbot has no grader for are kept as `NotRun`
entries, by type and line, for the report to list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import posixpath
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import yaml

from bot.engine import graders as g
from bot.engine.graders import Grade, Grader, Sample, split_values
from bot.engine.models import ModelClient
from bot.errors import InputError, JudgeError
from bot.pipeline.config import PromptfooAssertionGrader
from bot.pipeline.datasets import Case, Dataset
from bot.pipeline.prompts import Messages, Prompt, compile_messages
from bot.pipeline.source import path_problem
from bot.pipeline.templates import TemplateError, compile_template
from bot.pipeline.yamlio import line_of, load_yaml

# Reads a repository file (a path from the repository root) at the config's commit; None when absent.
ReadFile = Callable[[str], Awaitable[str | None]]
# Lists the repository files at that commit matching a glob pattern (from the repository root).
ListFiles = Callable[[str], Awaitable[list[str]]]

FILE_PREFIX = "file://"

# Provider prefixes (promptfoo's `provider:[api:]model`) and the litellm provider each maps to. Which
# of them a run may call is the base branch's `allowed_models` policy, checked later like any model.
_PROVIDERS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure": "azure",
    "azureopenai": "azure",
    "vertex": "vertex_ai",
    "google": "gemini",
    "gemini": "gemini",
    "bedrock": "bedrock",
    "mistral": "mistral",
    "groq": "groq",
    "cohere": "cohere",
    "togetherai": "together_ai",
    "fireworks": "fireworks_ai",
    "deepseek": "deepseek",
    "xai": "xai",
    "openrouter": "openrouter",
    "ollama": "ollama",
}
# The API part of `provider:api:model` that names the kind of call, dropped from the model name.
_APIS = {"chat", "messages", "completion", "responses"}

# Assertion types evalbot grades, by promptfoo name (the `not-` forms of each as well).
DETERMINISTIC = frozenset(
    {
        "equals",
        "contains",
        "icontains",
        "contains-any",
        "contains-all",
        "icontains-any",
        "icontains-all",
        "starts-with",
        "regex",
        "is-json",
        "contains-json",
        "levenshtein",
        "latency",
        "cost",
    }
)
JUDGED = frozenset({"similar", "similar:cosine", "llm-rubric", "model-graded-closedqa", "factuality"})
# Assertions that run code or call a URL the pull request controls: never run, always listed.
RUNS_CODE = frozenset({"javascript", "python", "ruby", "webhook"})
# Types whose value is a list of texts (a comma-separated string in CSV).
_LIST_VALUED = frozenset({"contains-any", "contains-all", "icontains-any", "icontains-all"})
# CSV `__expected` prefixes with a threshold default other than promptfoo's 0.75.
_CSV_THRESHOLD_TYPES = frozenset(
    {
        "answer-relevance",
        "classifier",
        "context-faithfulness",
        "context-recall",
        "context-relevance",
        "cost",
        "latency",
        "levenshtein",
        "perplexity-score",
        "perplexity",
        "rouge-n",
        "similar",
        "starts-with",
    }
)
# Every base assertion type promptfoo knows (0.121): `type:value` in a CSV cell is an assertion only
# when `type` is one of these; anything else is an `equals`.
_KNOWN_TYPES = DETERMINISTIC | JUDGED | RUNS_CODE | {
    "agent-rubric", "answer-relevance", "bleu", "classifier", "contains-html", "contains-sql", "contains-xml",
    "context-faithfulness", "context-recall", "context-relevance", "conversation-relevance", "finish-reason",
    "g-eval", "gleu", "guardrails", "is-html", "is-refusal", "is-sql", "is-valid-function-call",
    "is-valid-openai-function-call", "is-valid-openai-tools-call", "is-xml", "pi", "meteor",
    "model-graded-factuality", "moderation", "perplexity", "perplexity-score", "rouge-n", "similar:dot",
    "similar:euclidean", "tool-call-f1", "skill-used", "trajectory:goal-success", "trajectory:tool-args-match",
    "trajectory:step-count", "trajectory:tool-sequence", "trajectory:tool-used", "trace-error-spans",
    "trace-span-count", "trace-span-duration", "search-rubric", "word-count",
}  # fmt: skip
_CSV_ASSERTION = re.compile(
    r"^(not-)?(" + "|".join(re.escape(t) for t in sorted(_KNOWN_TYPES, key=len, reverse=True)) + r")"
    r"(?:\((\d+(?:\.\d+)?)\))?(?::([\s\S]*))?$"
)
# Aliases promptfoo accepts for a type evalbot grades under another name.
_ALIASES = {"model-graded-factuality": "factuality"}


@dataclass(frozen=True)
class ConfigPrompt:
    """One promptfoo prompt: chat messages whose contents are Nunjucks (≈ Jinja2) templates."""

    label: str
    messages: tuple[tuple[str, str], ...]
    path: str
    line: int | None


@dataclass(frozen=True)
class Provider:
    """A promptfoo provider as a litellm model with its call parameters."""

    id: str
    model: str
    label: str | None
    temperature: float | None
    max_tokens: int | None
    # `config.apiBaseUrl`: recorded, not followed (the deployment's endpoint is the one called).
    api_base: str | None
    line: int | None


@dataclass(frozen=True)
class Assertion:
    """One assertion of a test, its value rendered for the test (`type` keeps a `not-` prefix)."""

    type: str
    value: Any
    threshold: float | None
    path: str
    line: int | None

    @property
    def negated(self) -> bool:
        return self.type.startswith("not-")

    @property
    def base_type(self) -> str:
        base = self.type.removeprefix("not-")
        return _ALIASES.get(base, base)


@dataclass(frozen=True)
class NotRun:
    """An assertion evalbot does not run, where it is, and why."""

    type: str
    path: str
    line: int | None
    reason: str
    tests: int = 1


@dataclass(frozen=True)
class Test:
    """One promptfoo test case: its vars (a dataset row) and the assertions that apply to it alone."""

    vars: dict[str, Any]
    assertions: tuple[Assertion, ...]
    description: str | None
    path: str
    line: int | None


@dataclass
class PromptfooConfig:
    """What a promptfoo config makes promptfoo evaluate: every prompt × provider on every test."""

    path: str
    prompts: list[ConfigPrompt]
    providers: list[Provider]
    tests: list[Test]
    not_run: list[NotRun] = field(default_factory=list)
    # Every repository file read to build this (the config first): a change to any is a change here.
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def resolve(config_path: str, ref: str) -> str:
    """A `file://` reference of the config at `config_path` as a path from the repository root.

    Raises:
        ValueError: for a path outside the repository (absolute, or `..` above its root).
    """
    if ref.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", ref) or ref.startswith("~"):
        raise ValueError(f"{ref!r} is an absolute path: write it relative to {config_path}")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(config_path), ref))
    if joined == ".." or joined.startswith("../"):
        raise ValueError(f"{ref!r} leads outside the repository")
    problem = path_problem(joined)
    if problem is not None and not _is_glob(joined):
        raise ValueError(f"{ref!r} is not a path inside the repository: {problem}")
    return joined


# A file promptfoo would run (a prompt function, a var or test generator): `file://x.py`, `file://x.js:fn`.
_CODE_FILE = re.compile(r"\.(?:js|cjs|mjs|ts|py|rb)(?::[\w.]*)?$", re.IGNORECASE)


def glob_match(pattern: str, path: str) -> bool:
    """Whether `path` matches a glob as promptfoo's globs do: `*` and `?` within one directory, `**`
    across any number of them, `[abc]` a character class."""
    parts = []
    for token in re.split(r"(\*\*/|\*\*|\*|\?|\[[^\]/]*\])", pattern):
        if token in ("**/", "**"):
            parts.append("(?:.*/)?" if token == "**/" else ".*")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        elif token.startswith("[") and token.endswith("]") and len(token) > 2:
            parts.append(token)
        else:
            parts.append(re.escape(token))
    return re.fullmatch("".join(parts), path) is not None


def glob_root(pattern: str) -> str:
    """The directory a glob's matches are all under ('' for the repository root)."""
    fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return fixed.rpartition("/")[0]


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


class _Reader:
    """The state of one read: the config's node tree (for lines) and the files read so far."""

    def __init__(self, path: str, node: yaml.Node | None, read: ReadFile, glob: ListFiles | None):
        self.path, self.node, self._read, self._glob = path, node, read, glob
        self.files: list[str] = [path]
        self.not_run: list[NotRun] = []
        self.warnings: list[str] = []

    def line(self, *loc: str | int) -> int | None:
        return line_of(self.node, list(loc))

    def error(self, message: str, *loc: str | int) -> InputError:
        return InputError(message, self.path, self.line(*loc))

    def resolve(self, ref: str, *loc: str | int) -> str:
        try:
            return resolve(self.path, ref)
        except ValueError as exc:
            raise self.error(f"file:// {exc}", *loc) from None

    async def paths(self, ref: str, *loc: str | int) -> list[str]:
        """The repository files a `file://` reference names (a glob may name several)."""
        path = self.resolve(ref.removeprefix(FILE_PREFIX), *loc)
        if not _is_glob(path):
            return [path]
        if self._glob is None:
            raise self.error(f"{ref}: globs cannot be listed here", *loc)
        found = sorted(p for p in await self._glob(path) if glob_match(path, p))
        if not found:
            raise self.error(f"{ref} matches no file", *loc)
        return found

    async def text(self, path: str, *loc: str | int) -> str:
        text = await self._read(path)
        if text is None:
            raise self.error(f"{path} does not exist", *loc)
        if path not in self.files:
            self.files.append(path)
        return text


async def parse_promptfoo(text: str, path: str, read: ReadFile, glob: ListFiles | None = None) -> PromptfooConfig:
    """Read a promptfoo config and the files it names.

    Args:
        text: the config's text.
        path: its path from the repository root (`file://` paths are relative to its directory).
        read: reads another file of the same commit.
        glob: lists the files of the same commit matching a pattern (for `file://dir/*.txt`).

    Raises:
        InputError: naming the file and line of anything that cannot be read: a provider with no
            litellm equivalent, a `file://` path outside the repository, a missing file, a prompt
            that is code.
    """
    data, node = load_yaml(text, path)
    if not isinstance(data, dict):
        raise InputError("a promptfoo config is a mapping (prompts:, providers:, tests:)", path)
    reader = _Reader(path, node, read, glob)
    prompts = await _prompts(reader, data.get("prompts"))
    providers = _providers(reader, data.get("providers", data.get("targets")))
    default = await _default_test(reader, data.get("defaultTest"))
    tests = await _tests(reader, data.get("tests"), default)
    for key in ("scenarios", "nunjucksFilters", "extensions"):
        if data.get(key):
            reader.warnings.append(f"{path}:{reader.line(key)}: `{key}` is not read by evalbot")
    return PromptfooConfig(path, prompts, providers, tests, _merged(reader.not_run), reader.files, reader.warnings)


def _merged(not_run: list[NotRun]) -> list[NotRun]:
    """One entry per assertion line, counting the tests it applies to (a defaultTest one: every test)."""
    counts: dict[tuple[str, str, int | None, str], int] = {}
    for entry in not_run:
        key = (entry.type, entry.path, entry.line, entry.reason)
        counts[key] = counts.get(key, 0) + entry.tests
    return [NotRun(t, p, line, reason, n) for (t, p, line, reason), n in counts.items()]


# --- prompts


async def _prompts(reader: _Reader, raw: Any) -> list[ConfigPrompt]:
    if raw is None:
        raise reader.error("no `prompts:`")
    entries: list[tuple[Any, tuple[str | int, ...]]]
    if isinstance(raw, str):
        entries = [(raw, ("prompts",))]
    elif isinstance(raw, list):
        entries = [(item, ("prompts", i)) for i, item in enumerate(raw)]
    elif isinstance(raw, dict):
        # promptfoo's map form: {file://path: label}.
        entries = [({"id": key, "label": value}, ("prompts", key)) for key, value in raw.items()]
    else:
        raise reader.error("`prompts:` is a list of prompts or file:// paths", "prompts")
    prompts: list[ConfigPrompt] = []
    for index, (item, loc) in enumerate(entries):
        label = None
        if isinstance(item, dict):
            label = item.get("label")
            body = item.get("raw", item.get("id"))
            if not isinstance(body, str):
                raise reader.error("a prompt entry needs `raw:` text or an `id: file://...`", *loc)
        elif isinstance(item, str):
            body = item
        else:
            raise reader.error("a prompt is text or a file:// path", *loc)
        if (isinstance(item, dict) and "raw" in item) or not body.startswith(FILE_PREFIX):
            name = str(label) if label else f"prompt {index + 1}"
            prompts.append(ConfigPrompt(name, (("user", body),), reader.path, reader.line(*loc)))
            continue
        if _CODE_FILE.search(body):
            raise reader.error(f"{body} is a prompt function: evalbot does not run code from a pull request", *loc)
        for path in await reader.paths(body, *loc):
            prompts += await _prompt_file(reader, path, str(label) if label else None, loc)
    labels = [p.label for p in prompts]
    repeated = sorted({name for name in labels if labels.count(name) > 1})
    if repeated:
        raise reader.error(f"prompts need distinct labels to be compared; repeated: {', '.join(repeated)}", "prompts")
    return prompts


async def _prompt_file(reader: _Reader, path: str, label: str | None, loc: tuple[str | int, ...]) -> list[ConfigPrompt]:
    line = reader.line(*loc)
    ext = posixpath.splitext(path)[1].lower()
    text = await reader.text(path, *loc)
    if ext in {".json", ".yaml", ".yml"}:
        messages = _chat_messages(reader, path, text, ext, loc)
        return [ConfigPrompt(label or path, messages, path, line)]
    parts = _split_prompts(text)
    if len(parts) == 1:
        return [ConfigPrompt(label or path, (("user", parts[0]),), path, line)]
    base = label or path
    return [ConfigPrompt(f"{base}#{i + 1}", (("user", part),), path, line) for i, part in enumerate(parts)]


def _split_prompts(text: str) -> list[str]:
    """A .txt prompt file's prompts: separated by lines that are `---`, each trimmed, empty ones dropped."""
    parts: list[str] = []
    buffer: list[str] = []
    for line in re.split(r"\r?\n", text):
        if line.strip() == "---":
            parts.append("\n".join(buffer).strip())
            buffer = []
        else:
            buffer.append(line)
    parts.append("\n".join(buffer).strip())
    return [part for part in parts if part]


def _chat_messages(
    reader: _Reader, path: str, text: str, ext: str, loc: tuple[str | int, ...]
) -> tuple[tuple[str, str], ...]:
    try:
        data = json.loads(text) if ext == ".json" else load_yaml(text, path)[0]
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc.msg}", path, exc.lineno) from None
    if isinstance(data, str):
        return (("user", data),)
    ok = isinstance(data, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in data
    )
    if not ok or not data:
        raise reader.error(f"{path}: a chat prompt is a list of {{role, content}} messages", *loc)
    return tuple((m["role"], m["content"]) for m in data)


# --- providers


def _providers(reader: _Reader, raw: Any) -> list[Provider]:
    if raw is None:
        raise reader.error("no `providers:`")
    items = raw if isinstance(raw, list) else [raw]
    providers = []
    for i, item in enumerate(items):
        loc: tuple[str | int, ...] = ("providers", i) if isinstance(raw, list) else ("providers",)
        if isinstance(item, str):
            providers.append(_provider(reader, item, {}, None, loc))
        elif isinstance(item, dict) and "id" in item:
            providers.append(_provider(reader, item["id"], item.get("config") or {}, item.get("label"), loc))
        elif isinstance(item, dict) and len(item) == 1:
            # The map form: {openai:gpt-4o: {config: ...}}.
            ((pid, options),) = item.items()
            options = options if isinstance(options, dict) else {}
            providers.append(_provider(reader, pid, options.get("config") or {}, options.get("label"), loc))
        else:
            raise reader.error("a provider is an id (openai:gpt-4o-mini) or {id, config}", *loc)
    if not providers:
        raise reader.error("`providers:` names no provider", "providers")
    return providers


def provider_model(provider_id: str) -> str | None:
    """The litellm model of a promptfoo provider id, or None when it has none (echo, exec:, http...)."""
    prefix, _, rest = provider_id.partition(":")
    target = _PROVIDERS.get(prefix)
    if target is None or not rest:
        return None
    api, _, model = rest.partition(":")
    if api in _APIS and model:
        if prefix == "ollama" and api == "chat":
            target = "ollama_chat"
        rest = model
    return f"{target}/{rest}"


def _provider(reader: _Reader, pid: Any, config: Any, label: Any, loc: tuple[str | int, ...]) -> Provider:
    model = provider_model(pid) if isinstance(pid, str) else None
    if model is None:
        raise reader.error(
            f"provider {pid!r} has no litellm equivalent evalbot can call "
            f"(mapped: {', '.join(sorted(_PROVIDERS))} as provider:model or provider:chat:model)",
            *loc,
        )
    config = config if isinstance(config, dict) else {}
    temperature = config.get("temperature")
    max_tokens = config.get("max_tokens", config.get("maxTokens"))
    if temperature is not None and not isinstance(temperature, int | float):
        raise reader.error("config.temperature is a number", *loc)
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise reader.error("config.max_tokens is a positive whole number", *loc)
    api_base = config.get("apiBaseUrl", config.get("apiHost"))
    return Provider(
        pid,
        model,
        str(label) if label is not None else None,
        float(temperature) if temperature is not None else None,
        max_tokens,
        str(api_base) if api_base else None,
        reader.line(*loc),
    )


# --- tests


@dataclass
class _Default:
    vars: dict[str, Any] = field(default_factory=dict)
    assertions: list[tuple[dict[str, Any], str, int | None]] = field(default_factory=list)


async def _default_test(reader: _Reader, raw: Any) -> _Default:
    if raw is None:
        return _Default()
    if isinstance(raw, str) and raw.startswith(FILE_PREFIX):
        (path,) = await reader.paths(raw, "defaultTest")
        raw = _structured(path, await reader.text(path, "defaultTest"))
    if not isinstance(raw, dict):
        raise reader.error("`defaultTest:` is a mapping (vars:, assert:)", "defaultTest")
    variables = await _vars(reader, raw.get("vars") or {}, ("defaultTest", "vars"))
    asserts = raw.get("assert") or []
    if not isinstance(asserts, list):
        raise reader.error("`assert:` is a list", "defaultTest", "assert")
    return _Default(
        variables, [(a, reader.path, reader.line("defaultTest", "assert", i)) for i, a in enumerate(asserts)]
    )


async def _tests(reader: _Reader, raw: Any, default: _Default) -> list[Test]:
    if raw is None:
        # promptfoo runs each prompt once with the default vars.
        return [_test(reader, {}, [], None, reader.path, None, default)]
    items = raw if isinstance(raw, list) else [raw]
    tests: list[Test] = []
    for i, item in enumerate(items):
        loc: tuple[str | int, ...] = ("tests", i) if isinstance(raw, list) else ("tests",)
        if isinstance(item, str) and item.startswith(FILE_PREFIX):
            for path in await reader.paths(item, *loc):
                tests += await _test_file(reader, path, await reader.text(path, *loc), default)
        elif isinstance(item, dict):
            tests += await _inline_test(reader, item, loc, default)
        else:
            raise reader.error("a test is a mapping (vars:, assert:) or a file:// path", *loc)
    return tests


async def _inline_test(
    reader: _Reader, item: dict[str, Any], loc: tuple[str | int, ...], default: _Default
) -> list[Test]:
    variables = await _vars(reader, item.get("vars") or {}, (*loc, "vars"))
    asserts = item.get("assert") or []
    if not isinstance(asserts, list):
        raise reader.error("`assert:` is a list", *loc, "assert")
    own = [(a, reader.path, reader.line(*loc, "assert", i)) for i, a in enumerate(asserts)]
    description = item.get("description")
    return [
        _test(reader, combo, own, description, reader.path, reader.line(*loc), default) for combo in _expand(variables)
    ]


def _expand(variables: dict[str, Any]) -> list[dict[str, Any]]:
    """promptfoo runs a test once per combination of its list-valued vars."""
    lists = {k: v for k, v in variables.items() if isinstance(v, list)}
    if not lists:
        return [variables]
    keys = list(lists)
    return [{**variables, **dict(zip(keys, combo, strict=True))} for combo in itertools.product(*lists.values())]


async def _vars(reader: _Reader, raw: Any, loc: tuple[str | int, ...]) -> dict[str, Any]:
    if isinstance(raw, str) and raw.startswith(FILE_PREFIX):
        (path,) = await reader.paths(raw, *loc)
        raw = _structured(path, await reader.text(path, *loc))
    if not isinstance(raw, dict):
        raise reader.error("`vars:` is a mapping", *loc)
    variables: dict[str, Any] = {}
    for name, value in raw.items():
        variables[str(name)] = await _var(reader, value, (*loc, name))
    return variables


async def _var(reader: _Reader, value: Any, loc: tuple[str | int, ...]) -> Any:
    if isinstance(value, list):
        return [await _var(reader, v, loc) for v in value]
    if not (isinstance(value, str) and value.startswith(FILE_PREFIX)):
        return value
    if _CODE_FILE.search(value):
        raise reader.error(f"{value}: a var computed by code is not run by evalbot", *loc)
    paths = await reader.paths(value, *loc)
    loaded = []
    for path in paths:
        ext = posixpath.splitext(path)[1].lower()
        text = await reader.text(path, *loc)
        loaded.append(_structured(path, text) if ext in {".json", ".yaml", ".yml"} else text)
    return loaded[0] if len(loaded) == 1 else loaded


def _structured(path: str, text: str) -> Any:
    if path.lower().endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not JSON: {exc.msg}", path, exc.lineno) from None
    return load_yaml(text, path)[0]


async def _test_file(reader: _Reader, path: str, text: str, default: _Default) -> list[Test]:
    ext = posixpath.splitext(path)[1].lower()
    if ext == ".csv":
        return _csv_tests(reader, path, text, default)
    items: list[tuple[Any, int | None]] = []
    if ext == ".jsonl":
        for number, raw in enumerate(text.splitlines(), 1):
            if raw.strip():
                try:
                    items.append((json.loads(raw), number))
                except json.JSONDecodeError as exc:
                    raise InputError(f"not JSON: {exc.msg}", path, number) from None
    elif ext in {".yaml", ".yml", ".json"}:
        data, node = (_structured(path, text), None) if ext == ".json" else load_yaml(text, path)
        data = data if isinstance(data, list) else [data]
        items = [(item, line_of(node, [i])) for i, item in enumerate(data)]
    else:
        raise InputError("tests are read from .csv, .yaml, .yml, .json or .jsonl files", path)
    tests = []
    for item, line in items:
        if not isinstance(item, dict):
            raise InputError("a test is a mapping (vars:, assert:)", path, line)
        variables = await _vars(reader, item.get("vars") or {}, ("tests",))
        asserts = [(a, path, line) for a in item.get("assert") or []]
        tests += [
            _test(reader, combo, asserts, item.get("description"), path, line, default) for combo in _expand(variables)
        ]
    return tests


def _csv_tests(reader: _Reader, path: str, text: str, default: _Default) -> list[Test]:
    rows = csv.DictReader(io.StringIO(text))
    tests = []
    for row in rows:
        # The reader's line is the row's last physical line: a quoted cell can span lines.
        line = rows.line_num
        variables: dict[str, Any] = {}
        asserts: list[tuple[dict[str, Any], str, int | None]] = []
        description = None
        for key, value in row.items():
            key, value = (key or "").strip(), value or ""
            if key.startswith("__expected"):
                if value.strip():
                    asserts.append((assertion_from_string(value.strip()), path, line))
            elif key == "__description":
                description = value
            elif key.startswith("__"):
                continue
            else:
                variables[key] = value
        tests.append(_test(reader, variables, asserts, description, path, line, default))
    return tests


def assertion_from_string(expected: str) -> dict[str, Any]:
    """A CSV `__expected` cell as the assertion promptfoo makes of it (`type:value`, `type(0.9):value`,
    `not-type:value`, `fn:`/`javascript:`/`eval:` code, `grade:` rubric, `python:`; else `equals`)."""
    if expected.startswith(("javascript:", "fn:", "eval:")):
        return {"type": "javascript", "value": expected.partition(":")[2].strip()}
    if expected.startswith(FILE_PREFIX) and expected.endswith((".js", ".cjs", ".mjs", ".ts")):
        return {"type": "javascript", "value": expected}
    if expected.startswith(("grade:", "llm-rubric:")):
        return {"type": "llm-rubric", "value": expected.partition(":")[2]}
    if expected.startswith("python:") or (
        expected.startswith(FILE_PREFIX) and (expected.endswith(".py") or ".py:" in expected)
    ):
        return {"type": "python", "value": expected[7:].strip()}
    match = _CSV_ASSERTION.match(expected)
    if match is None:
        return {"type": "equals", "value": expected}
    negation, kind, threshold, value = match.groups()
    full = f"{negation or ''}{kind}"
    if kind in _LIST_VALUED:
        return {"type": full, "value": split_values(value) if value else value}
    if kind in {"contains-json", "is-json"}:
        return {"type": full, "value": value}
    result: dict[str, Any] = {"type": full, "value": value.strip() if value is not None else None}
    if kind in _CSV_THRESHOLD_TYPES:
        result["threshold"] = float(threshold) if threshold is not None else (0.8 if kind == "similar" else 0.75)
    return result


def _test(
    reader: _Reader,
    variables: dict[str, Any],
    own: list[tuple[Any, str, int | None]],
    description: Any,
    path: str,
    line: int | None,
    default: _Default,
) -> Test:
    merged = {**default.vars, **variables}
    assertions = []
    for raw, where, at in [*default.assertions, *own]:
        assertion = _assertion(reader, raw, merged, where, at)
        if assertion is not None:
            assertions.append(assertion)
    return Test(merged, tuple(assertions), str(description) if description is not None else None, path, line)


def _assertion(reader: _Reader, raw: Any, variables: dict[str, Any], path: str, line: int | None) -> Assertion | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise InputError("an assertion is a mapping with a `type:`", path, line)
    kind = raw["type"]
    base = _ALIASES.get(kind.removeprefix("not-"), kind.removeprefix("not-"))
    reason = None
    if base in RUNS_CODE:
        reason = "runs code or calls a URL the pull request controls"
    elif raw.get("transform"):
        reason = "its `transform` runs code"
    elif isinstance(raw.get("value"), str) and raw["value"].startswith(FILE_PREFIX):
        reason = "its value is read from a file by code"
    elif base not in DETERMINISTIC | JUDGED:
        reason = "evalbot has no grader for it"
    if reason is not None:
        reader.not_run.append(NotRun(kind, path, line, reason))
        return None
    threshold = raw.get("threshold")
    if threshold is not None and not isinstance(threshold, int | float):
        raise InputError(f"{kind}: threshold is a number", path, line)
    if base in {"latency", "cost"} and threshold is None:
        raise InputError(f"{kind} needs a threshold", path, line)
    try:
        value = render_value(raw.get("value"), variables)
    except TemplateError as exc:
        message = f"{kind}: its value cannot be rendered with the test's vars: {exc.message}"
        raise InputError(message, path, line) from None
    return Assertion(kind, value, threshold, path, line)


_TEMPLATE = re.compile(r"\{\{|\{%")


def render_value(value: Any, variables: dict[str, Any]) -> Any:
    """An assertion's value with the test's vars filled in, as promptfoo renders it (Nunjucks, here
    evalbot's bounded Jinja2 sandbox; a missing var is an error, where Nunjucks renders it empty).

    Raises:
        TemplateError: the value does not compile or render within the template budget.
    """
    if isinstance(value, list):
        return [render_value(v, variables) for v in value]
    if not isinstance(value, str) or not _TEMPLATE.search(value):
        return value
    return compile_template(value, "jinja2").render(variables)


# --- assertions as evalbot graders

# Row fields holding a test's assertions: `__assert:<type>#<n>` is the n-th assertion of that type in
# the test (its value and threshold); a row without the field is not judged by that slot's grader.
ASSERT_FIELD_PREFIX = "__assert:"


def slot_field(assertion_type: str, nth: int) -> str:
    return f"{ASSERT_FIELD_PREFIX}{assertion_type}#{nth}"


def rows(config: PromptfooConfig) -> list[dict[str, Any]]:
    """The tests as dataset rows: their vars, and their own assertions in `__assert:` fields."""
    result = []
    for test in config.tests:
        row: dict[str, Any] = dict(test.vars)
        seen: dict[str, int] = {}
        for assertion in test.assertions:
            nth = seen[assertion.type] = seen.get(assertion.type, 0) + 1
            row[slot_field(assertion.type, nth)] = {"value": assertion.value, "threshold": assertion.threshold}
        result.append(row)
    return result


def grader_specs(config: PromptfooConfig) -> list[PromptfooAssertionGrader]:
    """One grader per assertion slot found in any test, in order of first appearance."""
    slots: dict[str, str] = {}
    for row in rows(config):
        for name in row:
            if name.startswith(ASSERT_FIELD_PREFIX) and name not in slots:
                slots[name] = name.removeprefix(ASSERT_FIELD_PREFIX).rpartition("#")[0]
    return [
        PromptfooAssertionGrader(type="promptfoo_assertion", assertion=kind, field=name) for name, kind in slots.items()
    ]


def assertion_grader(spec: PromptfooAssertionGrader, judge: ModelClient, judge_model: str) -> Grader:
    """The engine grader of one assertion slot: it judges the rows whose test has that assertion,
    with that test's value and threshold, and reports under promptfoo's type name."""
    base = spec.assertion.removeprefix("not-")
    base = _ALIASES.get(base, base)
    if base not in DETERMINISTIC | JUDGED:
        raise InputError(f"promptfoo assertion {spec.assertion!r} has no evalbot grader")

    def applies(sample: Sample) -> bool:
        return spec.field in sample.fields

    async def grade(sample: Sample) -> Grade:
        slot = sample.fields[spec.field]
        built = _grader(base, slot["value"], slot["threshold"], judge, judge_model, spec.embedding_model)
        return await (g.negate(built) if spec.assertion.startswith("not-") else built)(sample)

    return g.renamed(Grader(spec.assertion, "accuracy", grade), spec.assertion, applies)


def _grader(
    base: str, value: Any, threshold: float | None, judge: ModelClient, judge_model: str, embedding_model: str | None
) -> Grader:
    """The engine grader for one assertion's base type, value and threshold."""
    if base in {"contains", "icontains"}:
        return g.contains_texts([_js_string(value)], ignore_case=base == "icontains")
    if base in _LIST_VALUED:
        mode: Literal["any", "all"] = "any" if base.endswith("any") else "all"
        texts = [_js_string(v) for v in value] if isinstance(value, list) else _js_string(value)
        return g.contains_texts(texts, mode=mode, ignore_case=base.startswith("i"))
    if base == "equals":
        return g.equals_exact(value if isinstance(value, dict | list) else _js_string(value))
    if base == "starts-with":
        return g.starts_with_text(_js_string(value))
    if base == "regex":
        return g.regex(_js_string(value))
    if base in {"is-json", "contains-json"}:
        schema = _schema(value)
        return g.is_json(schema) if base == "is-json" else g.contains_json(schema)
    if base == "levenshtein":
        return g.levenshtein(_js_string(value), max_distance=int(threshold if threshold is not None else 5))
    if base == "latency":
        return g.latency(float(threshold or 0))
    if base == "cost":
        return g.cost(float(threshold or 0))
    if base in {"similar", "similar:cosine"}:
        assert embedding_model is not None  # PromptfooAssertionGrader.embedding_model of a `similar`
        similar = g.similarity(judge, embedding_model, _VALUE, 0.75 if threshold is None else threshold)
        return _with_value(similar, _js_string(value))
    if base == "llm-rubric":
        return g.rubric(judge, judge_model, [_js_string(value)], 7.0 if threshold is None else threshold * 10)
    if base == "model-graded-closedqa":
        return g.closed_qa(judge, judge_model, _js_string(value))
    return _with_value(g.factuality(judge, judge_model, _VALUE), _js_string(value))


def _js_string(value: Any) -> str:
    """A value as JavaScript's String() writes it (promptfoo compares with that): 5 not 5.0, true not True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


# The field a grader reads an assertion's own value from (set on the sample it is shown).
_VALUE = "__assert_value"


def _with_value(grader: Grader, value: Any) -> Grader:
    """`grader`, reading its reference from `_VALUE`, shown the assertion's value there."""

    async def grade(sample: Sample) -> Grade:
        return await grader(replace(sample, fields={**sample.fields, _VALUE: value}))

    return Grader(grader.name, grader.kind, grade)


def _schema(value: Any) -> dict[str, Any] | bool | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise JudgeError(f"the schema is not YAML or JSON: {exc}") from None
    if not isinstance(value, dict | bool):
        raise JudgeError("the value of is-json or contains-json is a JSON Schema")
    return value


# --- the suite the pipeline runs

# The row field naming the promptfoo prompt a case is sent with: a case is a (prompt, test) pair, as
# one cell of promptfoo's result matrix, and its id pairs it with the same cell of the other revision.
PROMPT_FIELD = "promptfoo_prompt"


@dataclass(frozen=True)
class PromptfooPrompt(Prompt):
    """Every prompt of a config as one: a row is rendered with the prompt its `PROMPT_FIELD` names."""

    by_label: Mapping[str, Prompt] = field(default_factory=dict)

    def renders(self, row: Mapping[str, Any]) -> bool:
        return str(row.get(PROMPT_FIELD)) in self.by_label

    def render(self, row: Mapping[str, Any]) -> Messages:
        return self.by_label[str(row[PROMPT_FIELD])].render(row)


@dataclass(frozen=True)
class PromptfooSuite:
    """What a promptfoo config makes a suite: its prompt(s), rows, graders, other models, files read."""

    prompt: Prompt
    dataset: Dataset
    graders: tuple[PromptfooAssertionGrader, ...]
    models: tuple[str, ...]
    files: tuple[str, ...]
    not_run: tuple[str, ...]
    warnings: tuple[str, ...]


def as_suite(config: PromptfooConfig) -> PromptfooSuite:
    """The config as the pipeline runs it.

    The first provider is the model under test and the others are compared side by side with it; each
    case is one prompt on one test, its id the prompt's label and the test's description (else a hash
    of its vars), so that a reordered, edited or re-asserted test still pairs with its base; its
    category is the prompt's label.

    Raises:
        InputError: a template that does not compile, naming its file and line.
    """
    provider = config.providers[0]
    by_label = {prompt.label: _compiled(prompt, provider) for prompt in config.prompts}
    cases: list[Case] = []
    keys = _test_keys(config.tests)
    for label in by_label:
        for key, test, row in zip(keys, config.tests, rows(config), strict=True):
            case_id = f"{label}:{key}"
            fields = {**row, PROMPT_FIELD: label}
            fields.setdefault("category", label)
            cases.append(Case(case_id, len(cases) + 1, test.line or 1, fields))
    content = {
        "model": provider.model,
        "temperature": provider.temperature,
        "max_tokens": provider.max_tokens,
        "prompts": {p.label: [list(m) for m in p.messages] for p in config.prompts},
    }
    # Always one dispatching prompt, even for one label: a row of a label the other revision lacks
    # must make no request there rather than be sent with another prompt.
    prompt = PromptfooPrompt(
        config.path,
        provider.model,
        tuple(m for p in by_label.values() for m in p.messages),
        temperature=provider.temperature,
        max_tokens=provider.max_tokens,
        content=content,
        model_line=provider.line,
        by_label=by_label,
    )
    warnings = list(config.warnings)
    if provider.api_base or any(p.api_base for p in config.providers):
        warnings.append(
            f"{config.path}: a provider's apiBaseUrl is not followed: calls go to the deployment's model endpoint"
        )
    not_run = [
        f"{entry.path}:{entry.line}: {entry.type} assertion not run ({entry.reason}); "
        f"{entry.tests} test{'s' if entry.tests != 1 else ''}"
        for entry in config.not_run
    ]
    return PromptfooSuite(
        prompt,
        Dataset(config.path, tuple(cases), id_field=PROMPT_FIELD),
        tuple(grader_specs(config)),
        tuple(dict.fromkeys(p.model for p in config.providers[1:] if p.model != provider.model)),
        tuple(config.files),
        tuple(not_run),
        tuple(warnings),
    )


def _test_keys(tests: list[Test]) -> list[str]:
    """What names each test across revisions: its description when no other test shares it (an edited
    question or var file then stays the same case), else a hash of its vars; repeats numbered."""
    descriptions = [t.description for t in tests]
    keys = []
    seen: dict[str, int] = {}
    for test in tests:
        if test.description and descriptions.count(test.description) == 1:
            key = test.description
        else:
            key = hashlib.sha256(json.dumps(test.vars, sort_keys=True, default=str).encode()).hexdigest()[:12]
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys


def _compiled(prompt: ConfigPrompt, provider: Provider) -> Prompt:
    parts = [(role, content, prompt.line, f"prompt {prompt.label!r}") for role, content in prompt.messages]
    messages = compile_messages(prompt.path, parts, "jinja2")
    return Prompt(
        prompt.path, provider.model, messages, temperature=provider.temperature, max_tokens=provider.max_tokens
    )
