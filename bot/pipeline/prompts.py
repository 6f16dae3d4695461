"""Prompt files: the format users already write, and `{placeholder}` templates filled without eval."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.errors import InputError
from bot.pipeline.yamlio import line_of, load_yaml, validate_model

# semver.org's grammar, without build metadata ordering (which semver ignores for precedence anyway).
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Sent as `max_tokens` when a prompt sets none, and assumed by the budget estimate: no call is unbounded.
DEFAULT_MAX_TOKENS = 512


class PromptSpec(BaseModel):
    # Extra keys are kept (users carry their own metadata) and reported as warnings.
    model_config = ConfigDict(extra="allow", frozen=True)

    version: str
    model: str = Field(min_length=1)
    system_prompt: str | None = None
    user_prompt_template: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None

    @property
    def output_tokens(self) -> int:
        """The `max_tokens` every call of this prompt sends (and the budget estimate assumes)."""
        return self.max_tokens or DEFAULT_MAX_TOKENS

    def unknown_keys(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())

    def content(self) -> dict[str, Any]:
        """Everything but the version: what must not change without a version bump."""
        return {k: v for k, v in self.model_dump().items() if k != "version"}


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt file: its spec, where it came from, and the placeholders its templates use."""

    path: str
    spec: PromptSpec
    placeholders: tuple[str, ...]
    warnings: tuple[str, ...]
    # Where `model:` is, to name it when the base's policy refuses the model.
    model_line: int | None = None
    # Where `version:` is, to point at it when the prompt changed without a version bump.
    version_line: int | None = None

    def messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages for one dataset row (the row must have every placeholder)."""
        messages = []
        if self.spec.system_prompt:
            messages.append({"role": "system", "content": fill(self.spec.system_prompt, row)})
        messages.append({"role": "user", "content": fill(self.spec.user_prompt_template, row)})
        return messages

    def missing_fields(self, row: dict[str, Any]) -> list[str]:
        return [name for name in self.placeholders if name not in row]


def placeholders(template: str) -> list[str]:
    """The `{names}` a template uses, in order, without repeats.

    Raises:
        ValueError: for anything but a plain name: `{x.attr}`, `{x[0]}`, `{x!r}`, `{x:>10}`, `{}`,
            or unbalanced braces. Templates are data, never code to evaluate.
    """
    names: list[str] = []
    for _literal, field, format_spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not _IDENTIFIER.match(field):
            raise ValueError(f"placeholder {{{field}}} is not a plain name (only {{name}} is allowed)")
        if conversion or format_spec:
            raise ValueError(f"placeholder {{{field}}} has a conversion or format spec, which is not allowed")
        if field not in names:
            names.append(field)
    return names


def fill(template: str, row: dict[str, Any]) -> str:
    """Fill a template's placeholders from a row; `{{` and `}}` stay literal braces."""
    parts = []
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        parts.append(literal)
        if field is not None:
            value = row[field]
            parts.append(value if isinstance(value, str) else _to_text(value))
    return "".join(parts)


def _to_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_to_text(item) for item in value)
    return "" if value is None else str(value)


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


def parse_prompt(text: str, path: str) -> Prompt:
    """Parse a prompt file and check its templates.

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
    names: list[str] = []
    for key in ("system_prompt", "user_prompt_template"):
        template = getattr(spec, key)
        if template is None:
            continue
        try:
            names += [name for name in placeholders(template) if name not in names]
        except ValueError as exc:
            raise InputError(f"{key}: {exc}", path, line_of(node, [key])) from None
    warnings = tuple(f"{path}: unknown key `{key}` (kept, not used)" for key in spec.unknown_keys())
    return Prompt(
        path=path,
        spec=spec,
        placeholders=tuple(names),
        warnings=warnings,
        model_line=line_of(node, ["model"]),
        version_line=line_of(node, ["version"]),
    )
