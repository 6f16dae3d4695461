"""LangChain prompt files (`load_prompt`'s YAML/JSON: `_type: prompt`, `template`, `input_variables`)."""

from __future__ import annotations

from typing import Any

import yaml

from bot.errors import InputError
from bot.pipeline.prompts import Prompt, compile_messages
from bot.pipeline.templates import TemplateFormat
from bot.pipeline.yamlio import line_of, text_line

# LangChain's names for template formats.
_FORMATS: dict[str, TemplateFormat] = {"f-string": "fstring", "jinja2": "jinja2", "mustache": "mustache"}


def is_langchain(data: Any) -> bool:
    """Whether parsed YAML/JSON is a LangChain prompt file (or another LangChain `_type`)."""
    return isinstance(data, dict) and ("_type" in data or ("template" in data and "input_variables" in data))


def parse_langchain(data: dict[str, Any], node: yaml.Node | None, path: str, suite_model: str | None) -> Prompt:
    """A LangChain prompt file as a Prompt with one user message.

    Raises:
        InputError: for another `_type` (few-shot prompts, chat prompts), `template_path` (a second file),
            an unknown `template_format`, a template that does not compile, or no `model:` on the suite.
    """
    kind = data.get("_type", "prompt")
    if kind != "prompt":
        raise InputError(
            f"LangChain `_type: {kind}` files are not read: evalbot reads `_type: prompt` (a single template)",
            path,
            line_of(node, ["_type"]),
        )
    if "template_path" in data:
        raise InputError(
            "`template_path` is not read: put the template in this file (`template:`), so that the suite "
            "watches the file the app loads",
            path,
            line_of(node, ["template_path"]),
        )
    template = data.get("template")
    if not isinstance(template, str) or not template:
        raise InputError("`template` must be a non-empty string", path, line_of(node, ["template"]))
    fmt = _FORMATS.get(str(data.get("template_format", "f-string")))
    if fmt is None:
        raise InputError(
            f"template_format {data.get('template_format')!r} is not one of {', '.join(_FORMATS)}",
            path,
            line_of(node, ["template_format"]),
        )
    if suite_model is None:
        raise InputError("a LangChain prompt file carries no model: set `model:` on its suite in .evalbot.yml", path)
    messages = compile_messages(path, [("user", template, text_line(node, ["template"]), "template")], fmt)
    prompt = Prompt(path, suite_model, messages, content={"file": data, "model": suite_model})
    declared = data.get("input_variables")
    if isinstance(declared, list):
        undeclared = [name for name in prompt.variables if name not in declared]
        if undeclared:
            line = line_of(node, ["input_variables"])
            raise InputError(f"the template uses {', '.join(undeclared)}, not in `input_variables`", path, line)
    return prompt
