"""YAML loading that keeps line numbers, so every load error can name a file and line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bot.errors import InputError

M = TypeVar("M", bound=BaseModel)


class _AliasRefused(yaml.MarkedYAMLError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a few hundred bytes of nested aliases expand to gigabytes
    (the "billion laughs"), and nothing in a prompt, dataset or config needs one."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _AliasRefused(problem="YAML aliases (*name) are not allowed", problem_mark=event.start_mark)
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


def load_yaml(text: str, path: str) -> tuple[Any, yaml.Node | None]:
    """Parse YAML safely; return the data and its node tree (for line look-ups).

    Raises:
        InputError: on a syntax error or an alias, naming the line.
    """
    try:
        # The reader checks the characters as the loader is made: a control character fails here.
        loader = _NoAliasLoader(text)
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", path) from None
    try:
        # One parse: the data is constructed from the node tree kept for line look-ups.
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except _AliasRefused as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise InputError(
            "YAML aliases (*name) are not allowed: write the value out (an alias can expand without bound)",
            path,
            line,
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise InputError(f"YAML syntax error: {exc.problem or exc.context}", path, line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", path) from None
    finally:
        loader.dispose()
    return data, node


def line_of(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the value at `loc` (keys and indexes), or of its nearest parent found."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for key in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(key):
                    child = value_node
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def text_line(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The line the text of the string at `loc` starts on: a block scalar's (`|`, `>`) starts below its key."""
    line = line_of(node, loc)
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((value for name, value in node.value if name.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return line
    if line is not None and isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        return line + 1
    return line


def validate_model(model: type[M], data: Any, path: str, node: yaml.Node | None) -> M:
    """Validate `data` as `model`; the first problem becomes an InputError with its line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        first_line = None
        for error in exc.errors():
            loc = [part for part in error["loc"] if isinstance(part, str | int)]
            where = ".".join(str(part) for part in loc) or "top level"
            problems.append(f"{where}: {error['msg']}")
            if first_line is None:
                first_line = line_of(node, loc)
        raise InputError("; ".join(problems), path, first_line) from None
