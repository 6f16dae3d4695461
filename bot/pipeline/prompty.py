"""Prompty files (`.prompty`): YAML front matter (model, parameters, inputs) and a templated body of
`system:` / `user:` / `assistant:` sections, read as the Prompty runtime reads them."""

from __future__ import annotations

import re
from typing import Any

from bot.errors import InputError
from bot.pipeline.prompts import Prompt, compile_messages
from bot.pipeline.templates import TemplateFormat
from bot.pipeline.yamlio import line_of, load_yaml

# A role marker alone on its line, as Prompty's chat parser reads it (`system:`, `# user:`, any case).
_ROLE_MARKER = re.compile(r"^\s*#?\s*(system|user|assistant|developer)\s*:\s*$", re.IGNORECASE)
_PARAMETERS = ("temperature", "max_tokens")


def parse_prompty(text: str, path: str, suite_model: str | None) -> Prompt:
    """A `.prompty` file as a Prompt.

    Args:
        text: the file's text.
        path: its path in the repository.
        suite_model: the suite's `model:`, which replaces the front matter's (an Azure deployment name,
            say, is no model name litellm can call).

    Raises:
        InputError: naming the line of a front matter or template problem, or a model that maps to no
            litellm name when the suite sets none.
    """
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise InputError("a .prompty file starts with YAML front matter between two `---` lines", path, 1)
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise InputError("the front matter is never closed by a `---` line", path, 1)
    front, node = load_yaml("\n" + "".join(lines[1:end]), path)
    front = front or {}
    if not isinstance(front, dict):
        raise InputError("the front matter must be a YAML mapping", path, 2)
    model_spec = front.get("model") or {}
    if not isinstance(model_spec, dict):
        raise InputError("`model` must be a mapping (api, configuration, parameters)", path, line_of(node, ["model"]))
    parameters = model_spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InputError("`model.parameters` must be a mapping", path, line_of(node, ["model", "parameters"]))
    configuration = model_spec.get("configuration") or {}
    model = suite_model or _litellm_model(configuration, path, line_of(node, ["model", "configuration"]))
    warnings = tuple(
        f"{path}: model parameter `{key}` is not sent by evalbot (only {', '.join(_PARAMETERS)})"
        for key in parameters
        if key not in _PARAMETERS
    )
    fmt = _template_format(front.get("template", "jinja2"), path, line_of(node, ["template"]))
    parts: list[tuple[str, str, int | None, str]] = []
    role, start, body = "system", end + 2, []
    for number, line in enumerate(lines[end + 1 :], start=end + 2):
        marker = _ROLE_MARKER.match(line)
        if marker is None:
            body.append(line)
            continue
        if "".join(body).strip():
            parts.append((role, "".join(body).strip("\n"), start, f"{role} section"))
        role, start, body = marker.group(1).lower(), number + 1, []
    if "".join(body).strip():
        parts.append((role, "".join(body).strip("\n"), start, f"{role} section"))
    if not parts:
        raise InputError("the body has no message (write it under `system:` and `user:` lines)", path, end + 1)
    return Prompt(
        path=path,
        model=model,
        messages=compile_messages(path, parts, fmt),
        temperature=parameters.get("temperature"),
        max_tokens=parameters.get("max_tokens"),
        defaults=_input_defaults(front.get("inputs")),
        content={"front_matter": front, "body": "".join(lines[end + 1 :]), "model": model},
        warnings=warnings,
        model_line=line_of(node, ["model"]),
    )


def _litellm_model(configuration: Any, path: str, line: int | None) -> str:
    kind = configuration.get("type") if isinstance(configuration, dict) else None
    name = None
    if kind == "openai":
        name = configuration.get("name") or configuration.get("model")
        prefix = "openai"
    elif kind in ("azure_openai", "azure"):
        name = configuration.get("azure_deployment")
        prefix = "azure"
    if not isinstance(name, str) or not name or "${" in name:
        raise InputError(
            f"the model configuration ({kind or 'no type'}) names no model evalbot can call: set `model:` "
            "(a litellm name such as openai/gpt-4o-mini) on the suite in .evalbot.yml",
            path,
            line,
        )
    return f"{prefix}/{name}"


def _template_format(value: Any, path: str, line: int | None) -> TemplateFormat:
    fmt = value.get("format") if isinstance(value, dict) else value
    if fmt not in ("jinja2", "mustache"):
        raise InputError(f"template format {fmt!r} is not one evalbot renders (jinja2, mustache)", path, line)
    return "jinja2" if fmt == "jinja2" else "mustache"


def _input_defaults(inputs: Any) -> dict[str, Any]:
    """`inputs: {name: {type, default}}`: the defaults a row may leave out."""
    if not isinstance(inputs, dict):
        return {}
    return {name: spec["default"] for name, spec in inputs.items() if isinstance(spec, dict) and "default" in spec}
