"""Prompts as the pipeline runs them (`Prompt`), and evalbot's own prompt file format (YAML)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.errors import InputError
from bot.pipeline.templates import Template, TemplateError, TemplateFormat, chat_messages, compile_template
from bot.pipeline.yamlio import line_of, load_yaml, text_line, validate_model

# semver.org's grammar, without build metadata ordering (which semver ignores for precedence anyway).
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# Sent as `max_tokens` when a prompt sets none, and assumed by the budget estimate: no call is unbounded.
DEFAULT_MAX_TOKENS = 512


class ChatTurn(BaseModel):
    """One message of a prompt file's `messages:` (few-shot turns); its content is a template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(min_length=1)


class PromptSpec(BaseModel):
    """evalbot's own prompt file (YAML)."""

    # Extra keys are kept (users carry their own metadata) and reported as warnings.
    model_config = ConfigDict(extra="allow", frozen=True)

    version: str
    model: str = Field(min_length=1)
    system_prompt: str | None = None
    # Turns sent between the system prompt and the user prompt (few-shot examples), or the whole chat.
    messages: list[ChatTurn] | None = None
    user_prompt_template: str | None = Field(default=None, min_length=1)
    template_format: TemplateFormat = "fstring"
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _has_a_request(self) -> PromptSpec:
        if self.user_prompt_template is None and not self.messages:
            raise ValueError("a prompt needs `user_prompt_template` or `messages`")
        return self

    def unknown_keys(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())

    def content(self) -> dict[str, Any]:
        """Everything but the version: what must not change without a version bump."""
        return {k: v for k, v in self.model_dump().items() if k != "version"}


Messages = list[dict[str, str]]


@dataclass(frozen=True)
class MessageTemplate:
    """One message of a prompt: its role, its compiled template, and the file line the template starts on."""

    role: str
    template: Template
    line: int | None = None


@dataclass(frozen=True)
class Prompt:
    """A prompt as the pipeline runs it, whatever file format it was read from: the model and its call
    parameters, and message templates rendered per dataset row."""

    path: str
    model: str
    messages: tuple[MessageTemplate, ...]
    # evalbot's own format has a version that must increase with any change; other formats have none.
    version: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    # Values a template falls back on for fields a row does not have (a Prompty file's `inputs`).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Everything that defines the prompt but its version: a change of it is a change of the prompt.
    content: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # Where `model:` is, to name it when the base's policy refuses the model.
    model_line: int | None = None
    # Where `version:` is, to point at it when the prompt changed without a version bump.
    version_line: int | None = None

    @property
    def output_tokens(self) -> int:
        """The `max_tokens` every call of this prompt sends (and the budget estimate assumes)."""
        return self.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def revision(self) -> str:
        """The version, or for a format without one a hash of the content (`sha256:1a2b3c4d`): what the
        report and the drift check tell prompts apart by."""
        if self.version is not None:
            return self.version
        canonical = json.dumps(self.content, sort_keys=True, ensure_ascii=False, default=str)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:8]

    @property
    def variables(self) -> tuple[str, ...]:
        """The top-level names the templates read, in order, without repeats."""
        return tuple(dict.fromkeys(name for m in self.messages for name in m.template.variables))

    def renders(self, row: Mapping[str, Any]) -> bool:
        """Whether this prompt makes a request for `row` at all (a promptfoo config's prompt that is not
        in the other revision makes none there)."""
        return True

    def render(self, row: Mapping[str, Any]) -> Messages:
        """The chat messages for one dataset row. A message that is one variable whose value is a chat list
        (`[{role, content}]`) becomes those messages, system ones included; empty messages are left out.

        Raises:
            TemplateError: naming the line of this prompt's file the failing template starts on.
        """
        values = {**self.defaults, **row}
        messages: Messages = []
        for message in self.messages:
            name = message.template.sole_variable
            chat = chat_messages(values.get(name)) if name is not None else None
            if chat is not None:
                messages += chat
                continue
            try:
                content = message.template.render(values)
            except TemplateError as exc:
                raise type(exc)(exc.message, _file_line(message.line, exc.line)) from None
            if content.strip():
                messages.append({"role": message.role, "content": content})
        if not messages:
            raise TemplateError("the prompt renders no message for this row")
        return messages


def _file_line(start: int | None, template_line: int | None) -> int | None:
    if start is None:
        return None
    return start + (template_line or 1) - 1


def compile_messages(
    path: str, parts: list[tuple[str, str, int | None, str]], fmt: TemplateFormat
) -> tuple[MessageTemplate, ...]:
    """Compile `(role, template, first line in the file, what to call it)` parts of a prompt file.

    Raises:
        InputError: naming the file, the line and the part of the first template that does not compile.
    """
    compiled = []
    for role, source, line, name in parts:
        try:
            compiled.append(MessageTemplate(role, compile_template(source, fmt), line))
        except TemplateError as exc:
            raise InputError(f"{name}: {exc.message}", path, _file_line(line, exc.line)) from None
    return tuple(compiled)


def is_semver(version: str) -> bool:
    return bool(_SEMVER.match(version))


def semver_key(version: str) -> tuple[Any, ...]:
    """An orderable key with semver.org's precedence: a pre-release sorts before its release."""
    match = _SEMVER.match(version)
    if not match:
        raise ValueError(f"{version!r} is not a semantic version")
    major, minor, patch, pre, _build = match.groups()
    if pre is None:
        pre_key: tuple[Any, ...] = (1,)
    else:
        # Numeric identifiers compare as numbers and sort before alphanumeric ones (semver §11).
        pre_key = (0, *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))
    return (int(major), int(minor), int(patch), pre_key)


def parse_prompt(text: str, path: str, template_format: TemplateFormat | None = None) -> Prompt:
    """Parse evalbot's prompt file format and compile its templates.

    Args:
        text: the file's text.
        path: its path in the repository.
        template_format: the suite's, for a file that sets no `template_format` of its own.

    Raises:
        InputError: naming the file and line of a syntax, schema or template problem.
    """
    data, node = load_yaml(text, path)
    if not isinstance(data, dict):
        raise InputError("a prompt file must be a YAML mapping", path, 1)
    if "version" in data and not isinstance(data["version"], str):
        # YAML reads `version: 1.2` as a float; a semver must be quoted to survive.
        data["version"] = str(data["version"])
    spec = validate_model(PromptSpec, data, path, node)
    if not is_semver(spec.version):
        raise InputError(
            f"version {spec.version!r} is not a semantic version (MAJOR.MINOR.PATCH)",
            path,
            line_of(node, ["version"]),
        )
    parts: list[tuple[str, str, int | None, str]] = []
    if spec.system_prompt is not None:
        parts.append(("system", spec.system_prompt, text_line(node, ["system_prompt"]), "system_prompt"))
    for index, turn in enumerate(spec.messages or []):
        at: list[str | int] = ["messages", index, "content"]
        parts.append((turn.role, turn.content, text_line(node, at), f"messages[{index}]"))
    if spec.user_prompt_template is not None:
        at = ["user_prompt_template"]
        parts.append(("user", spec.user_prompt_template, text_line(node, at), "user_prompt_template"))
    fmt = spec.template_format if "template_format" in spec.model_fields_set else template_format or "fstring"
    messages = compile_messages(path, parts, fmt)
    warnings = tuple(f"{path}: unknown key `{key}` (kept, not used)" for key in spec.unknown_keys())
    return Prompt(
        path=path,
        model=spec.model,
        messages=messages,
        version=spec.version,
        temperature=spec.temperature,
        max_tokens=spec.max_tokens,
        tools=spec.tools,
        content=spec.content(),
        warnings=warnings,
        model_line=line_of(node, ["model"]),
        version_line=line_of(node, ["version"]),
    )
