"""Prompt templates: `{name}` (fstring), Jinja2 in a sandbox, and Mustache, each rendered within a budget.

A template comes from a pull request and a row from its dataset: both are hostile. Rendering never
evaluates Python, never reads a file, and stops with a `TemplateError` past `RENDER_TIMEOUT_S`,
`MAX_RENDER_STEPS` steps or `MAX_RENDER_CHARS` characters of any value it makes, so a worker neither
hangs nor fills its memory on a template like `{% for i in range(99999) %}{% for j in range(99999) %}`.
"""

from __future__ import annotations

import contextvars
import functools
import html
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

TemplateFormat = Literal["fstring", "jinja2", "mustache"]

# One rendered message (and any string or list a template builds on the way): a prompt is far smaller.
MAX_RENDER_CHARS = 100_000
# One render: a real prompt template renders in well under a millisecond.
RENDER_TIMEOUT_S = 1.0
# Loop iterations, calls, attribute look-ups and operators of one render.
MAX_RENDER_STEPS = 200_000
# Width and count arguments (`center(n)`, `indent(n)`, `'x'.ljust(n)`): past this, a template is only
# trying to allocate.
MAX_INT_ARGUMENT = 10_000
# Roles a chat message may have (OpenAI's chat format, which litellm maps for every provider).
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TemplateError(ValueError):
    """A template that cannot be compiled or rendered; `line` is 1-based within the template's text."""

    def __init__(self, message: str, line: int | None = None):
        self.message = message
        self.line = line
        super().__init__(message)


class TemplateLimitError(TemplateError):
    """A template refused whatever the row: over its budget, or an operation templates may not do."""


@dataclass(frozen=True)
class Template:
    """A compiled template: its format, source, the top-level variables it reads, and a bounded renderer."""

    format: TemplateFormat
    source: str
    variables: tuple[str, ...]
    _render: Callable[[Mapping[str, Any]], str] = field(repr=False, compare=False)

    def render(self, values: Mapping[str, Any]) -> str:
        """The template filled from `values` (a row, and defaults).

        Raises:
            TemplateError: a missing variable, a refused operation, or a budget exceeded.
        """
        budget = _Budget()
        token = _BUDGET.set(budget)
        try:
            text = self._render({k: _ChatText(v) if chat_messages(v) else v for k, v in values.items()})
        finally:
            _BUDGET.reset(token)
        budget.check_size(text)
        return text

    @property
    def sole_variable(self) -> str | None:
        """The variable when the template is that one variable and nothing else (`{input}`, `{{ input }}`)."""
        patterns = {
            "fstring": r"\{(\w+)\}",
            "jinja2": r"\{\{-?\s*(\w+)\s*-?\}\}",
            "mustache": r"\{\{\{?&?\s*(\w+)\s*\}?\}\}",
        }
        found = re.fullmatch(patterns[self.format], self.source.strip())
        return found.group(1) if found else None


def compile_template(source: str, fmt: TemplateFormat) -> Template:
    """Compile `source` as a template in format `fmt`.

    Raises:
        TemplateError: a syntax error, an include, import or extends, or (fstring) anything but `{name}`.
    """
    if fmt == "fstring":
        names = placeholders(source)
        return Template(fmt, source, tuple(names), functools.partial(fill, source))
    if fmt == "jinja2":
        return _jinja(source)
    return _mustache(source)


def chat_messages(value: Any) -> list[dict[str, str]] | None:
    """`value` as chat messages when it is a non-empty list of `{role, content}` objects, else None."""
    if not isinstance(value, list) or not value:
        return None
    messages = []
    for item in value:
        if not isinstance(item, dict) or item.get("role") not in CHAT_ROLES or not isinstance(item.get("content"), str):
            return None
        messages.append({"role": item["role"], "content": item["content"]})
    return messages


def to_text(value: Any) -> str:
    """A row value as prompt text: a chat list as `role: content` lines, a list one item a line, never a repr."""
    messages = chat_messages(value)
    if messages is not None:
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    if isinstance(value, list):
        return "\n".join(to_text(item) for item in value)
    return "" if value is None else str(value)


class _ChatText(list[Any]):
    """A chat list inside a template: iterable as messages, printed as text (`{{ input }}`), never a repr."""

    def __str__(self) -> str:
        return to_text(list(self))


# fstring ---------------------------------------------------------------------------------------------


def placeholders(template: str) -> list[str]:
    """The `{names}` a template uses, in order, without repeats.

    Raises:
        TemplateError: for anything but a plain name: `{x.attr}`, `{x[0]}`, `{x!r}`, `{x:>10}`, `{}`,
            or unbalanced braces. Templates are data, never code to evaluate.
    """
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{exc} (write a literal brace as {{{{ or }}}})") from None
    for _literal, name, format_spec, conversion in parsed:
        if name is None:
            continue
        if not _IDENTIFIER.match(name):
            raise TemplateError(f"placeholder {{{name}}} is not a plain name (only {{name}} is allowed)")
        if conversion or format_spec:
            raise TemplateError(f"placeholder {{{name}}} has a conversion or format spec, which is not allowed")
        if name not in names:
            names.append(name)
    return names


def fill(template: str, row: Mapping[str, Any]) -> str:
    """Fill a template's `{name}` placeholders from a row; `{{` and `}}` stay literal braces.

    Raises:
        TemplateError: naming the first placeholder the row has no value for.
    """
    parts = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            if name not in row:
                raise TemplateError(f"the row has no field `{name}`")
            value = row[name]
            parts.append(value if isinstance(value, str) else to_text(value))
    return "".join(parts)


# The budget ------------------------------------------------------------------------------------------


class _Budget:
    """Steps, time and sizes of one render."""

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + RENDER_TIMEOUT_S

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_RENDER_STEPS:
            raise TemplateLimitError(f"the template takes more than {MAX_RENDER_STEPS:,} steps to render one row")
        if self.steps % 256 < count and time.monotonic() > self.deadline:
            raise TemplateLimitError(f"the template takes more than {RENDER_TIMEOUT_S:g} s to render one row")

    @staticmethod
    def check_length(length: int, what: str = "the rendered text") -> None:
        if length > MAX_RENDER_CHARS:
            raise TemplateLimitError(f"{what} would be over {MAX_RENDER_CHARS:,} characters or items")

    @classmethod
    def check_size(cls, value: Any, what: str = "the rendered text") -> Any:
        if isinstance(value, str | list | tuple | dict):
            cls.check_length(len(value), what)
        return value


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("template_budget")


def _budget() -> _Budget:
    # Set by `Template.render`, the only way a compiled template is called.
    return _BUDGET.get()


def _printed_size(value: Any, limit: int) -> int:
    """About how many characters `value` prints as, counted only up to just past `limit`: cheap even for
    a list that holds the same list many times over (each level multiplies what it prints)."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += 8
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            total += 8
            stack += item
        else:
            total += 8  # a number, None, a short repr
    return total


def _printable(value: Any, limit: int = MAX_RENDER_CHARS) -> Any:
    """`value` when it prints within `limit` characters (containers are measured before they are printed)."""
    if isinstance(value, list | tuple | dict | set | frozenset) and _printed_size(value, limit) > limit:
        raise TemplateLimitError(f"a value would print as over {limit:,} characters")
    return value


def _check_int_arguments(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_INT_ARGUMENT:
            raise TemplateLimitError(
                f"an argument of {arg:,} is over {MAX_INT_ARGUMENT:,}: templates make prompts, not data"
            )


# Jinja2 ----------------------------------------------------------------------------------------------

# Methods a template may call on strings, lists and dicts: none of them can grow a value past its
# inputs (`center`, `ljust`, `zfill`, `expandtabs`, `format` can, and are refused).
_SAFE_METHODS = frozenset(
    {
        "capitalize", "casefold", "count", "endswith", "find", "get", "index", "isalnum", "isalpha", "isdigit",
        "islower", "isspace", "istitle", "isupper", "items", "keys", "lower", "lstrip", "partition", "removeprefix",
        "removesuffix", "rfind", "rindex", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith",
        "strip", "swapcase", "title", "upper", "values",
    }
)  # fmt: skip
_PERCENT_WIDTH = re.compile(r"%[#0 +\-]*(\d+)?(?:\.(\d+))?")


def _percent_widths_ok(fmt: Any) -> None:
    if isinstance(fmt, str):
        for width in _PERCENT_WIDTH.findall(fmt):
            _check_int_arguments(int(w) for w in width if w)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with a budget on every call, look-up, operator and loop step."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        # Joins a `{% set %}` block's or a macro's output: its parts may be the same long text many times.
        texts = list(parts)
        _budget().check_length(sum(len(text) for text in texts), "a block of text")
        return "".join(texts)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        _budget().step()
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(right) > 64 or left.bit_length() * abs(right) > 4096:
                raise TemplateLimitError(f"{left} ** {right} is too large a number for a prompt")
        elif operator == "*":
            for count, value in ((left, right), (right, left)):
                if isinstance(count, int) and isinstance(value, str | list | tuple):
                    _budget().check_length(max(count, 0) * len(value), "a repeated string or list")
                    _printable(value, MAX_RENDER_CHARS // max(count, 1))
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > 4096:
                raise TemplateLimitError("a product too large for a prompt")
        elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _budget().check_length(len(left) + len(right), "a concatenation")
        elif operator == "%":
            _percent_widths_ok(left)
        return _budget().check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _budget().step()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | list | tuple | dict) and getattr(__obj, "__name__", "") not in _SAFE_METHODS:
            name = getattr(__obj, "__name__", "?")
            raise TemplateLimitError(
                f"the method .{name}() is not available in templates (it can grow text without bound)"
            )
        _check_int_arguments([*args, *kwargs.values()])
        return _budget().check_size(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().step()
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            # Jinja wraps str.format for safety, not size: `'{:>999999999}'.format(1)` is a gigabyte.
            raise TemplateLimitError(f"the method .{attribute}() is not available in templates (use ~ to join text)")
        # `~` joins text without an operator hook: a value grown by it is caught where it is read again.
        return _budget().check_size(super().getattr(obj, attribute), "a value")

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().step()
        return _budget().check_size(super().getitem(obj, argument), "a value")


# Filters that print their value: a list or mapping is measured against the rendered text's cap.
_TEXT_FILTERS = frozenset(
    {
        "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "join", "lower", "pprint",
        "replace", "string", "striptags", "title", "tojson", "trim", "truncate", "upper", "urlencode", "urlize",
        "wordcount", "wordwrap", "xmlattr",
    }
)  # fmt: skip


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps `jinja_pass_arg`: Jinja still passes the context or environment
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _budget().step()
        passed = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
        if name == "join" and len(args) > passed and not isinstance(args[passed], str | list | tuple):
            # A range or a generator is listed first (at most MAX_RENDER_STEPS items), so it can be measured.
            args = (*args[:passed], _listed(args[passed]), *args[passed + 1 :])
        value, params = (args[passed] if len(args) > passed else None), [*args[passed + 1 :], *kwargs.values()]
        _check_int_arguments(params)
        if name in _TEXT_FILTERS:
            # A template can build a list holding the same list many times over: it prints as all of them.
            _printable(value)
        if name == "replace" and isinstance(value, str) and len(params) >= 2:
            old, new = str(params[0]), str(params[1])
            grown = len(value) + (value.count(old) if old else len(value) + 1) * max(len(new) - len(old), 0)
            _budget().check_length(grown, "the replaced text")
        elif name == "indent" and isinstance(value, str):
            width = params[0] if params else 4
            width = len(width) if isinstance(width, str) else width
            _budget().check_length(len(value) + (value.count("\n") + 1) * width)
        elif name == "join" and isinstance(value, list | tuple):
            separator = len(str(params[0])) if params else 0
            joined = _printed_size(value, MAX_RENDER_CHARS) + separator * max(len(value) - 1, 0)
            _budget().check_length(joined, "the joined text")
        elif name == "wordwrap" and isinstance(value, str):
            _budget().check_length(len(value) * (1 + sum(len(p) for p in params if isinstance(p, str))), "the text")
        elif name == "format":
            _percent_widths_ok(value)
        return _budget().check_size(func(*args, **kwargs))

    return bounded


def _listed(iterable: Iterable[Any]) -> list[Any]:
    items = []
    for item in iterable:
        _budget().step()
        items.append(item)
    return items


def _loop_budget(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` iterates through here: one budget step per item."""
    for item in iterable:
        _budget().step()
        yield item


_LOOP_FILTER = "__evalbot_loop_budget"
_PRINTABLE_FILTER = "__evalbot_printable"
# Directives that load another template: there is no loader, and a pull request's template may not
# read any file, even one of the commit.
_LOADING_NODES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


@functools.cache
def _environment() -> _Sandbox:
    # `finalize` sees every `{{ value }}` before it is printed.
    env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_printable)
    # lipsum(n) makes text from nothing; the other globals are Jinja's usual ones.
    del env.globals["lipsum"]
    env.filters = {name: _bounded_filter(name, func) for name, func in env.filters.items()}
    env.filters[_LOOP_FILTER] = _loop_budget
    env.filters[_PRINTABLE_FILTER] = _printable
    return env


def _jinja(source: str) -> Template:
    env = _environment()
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"Jinja2 syntax error: {exc.message}", exc.lineno) from None
    loading = next(iter(tree.find_all(_LOADING_NODES)), None)
    if loading is not None:
        kind = type(loading).__name__.lower().replace("fromimport", "import")
        raise TemplateError(
            f"{{% {kind} %}} is not supported: evalbot renders each template alone, without reading other files",
            loading.lineno,
        )
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
    for concat in tree.find_all(nodes.Concat):
        # `~` prints its operands with str(), out of any hook's reach: each is measured first.
        concat.nodes = [nodes.Filter(n, _PRINTABLE_FILTER, [], [], None, None, lineno=n.lineno) for n in concat.nodes]
    variables = tuple(sorted(meta.find_undeclared_variables(tree) - set(env.globals)))
    compiled = env.from_string(tree)

    def render(values: Mapping[str, Any]) -> str:
        budget = _budget()
        parts: list[str] = []
        size = 0
        try:
            for chunk in compiled.generate(values):
                size += len(chunk)
                budget.check_length(size)
                parts.append(chunk)
        except TemplateError as exc:
            raise type(exc)(exc.message, exc.line or _template_line(exc)) from None
        except SecurityError as exc:
            raise TemplateLimitError(f"Jinja2: {exc}", _template_line(exc)) from None
        except jinja2.UndefinedError as exc:
            message = str(exc.message)
            hint = " (the row has no such field)" if message.endswith("is undefined") else ""
            raise TemplateError(message + hint, _template_line(exc)) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"Jinja2: {exc}", _template_line(exc)) from None
        except RecursionError:
            raise TemplateLimitError("the template recurses too deeply") from None
        except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
            raise TemplateError(f"{type(exc).__name__}: {exc}", _template_line(exc)) from None
        return "".join(parts)

    return Template("jinja2", source, variables, render)


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised at: Jinja maps its frames to `<template>` lines."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# Mustache --------------------------------------------------------------------------------------------
# A small renderer of the Mustache spec's variables, sections, inverted sections and comments, rather
# than chevron: chevron reads `{{> partial}}` files from the working directory and bounds neither time
# nor output. Partials and delimiter changes are refused; data never holds lambdas (rows are JSON).

_MUSTACHE_TAG = re.compile(r"\{\{(\{)?\s*([#^/!>=&]?)\s*(.*?)\s*(\})?\}\}", re.DOTALL)


@dataclass
class _Node:
    kind: str  # "text", "var", "raw", "section", "inverted"
    value: str
    line: int
    children: list[_Node] = field(default_factory=list)


def _mustache_tree(source: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[_Node | None, list[_Node]]] = [(None, root)]
    position = 0
    for match in _MUSTACHE_TAG.finditer(source):
        triple, sigil, name, closing = match.groups()
        line = source.count("\n", 0, match.start()) + 1
        start, end = match.start(), match.end()
        if sigil in ("#", "^", "/", "!"):
            # A section or comment tag alone on its line takes the line with it (the spec's "standalone").
            line_start = source.rfind("\n", 0, start) + 1
            line_end = source.find("\n", end)
            line_end = len(source) if line_end == -1 else line_end + 1
            if source[line_start:start].strip() == "" and source[end:line_end].strip() == "":
                start, end = line_start, line_end
        siblings = stack[-1][1]
        if position < start:
            siblings.append(_Node("text", source[position:start], line))
        position = max(position, end)
        if sigil == "!":
            continue
        if sigil == ">":
            raise TemplateError(
                f"partials ({{{{> {name}}}}}) are not supported: the template must be self-contained", line
            )
        if sigil == "=":
            raise TemplateError("changing delimiters ({{= =}}) is not supported", line)
        if bool(triple) != bool(closing):
            raise TemplateError(f"unbalanced braces in tag {match.group(0)!r}", line)
        if not name:
            raise TemplateError("empty tag", line)
        if sigil in ("#", "^"):
            node = _Node("section" if sigil == "#" else "inverted", name, line)
            siblings.append(node)
            stack.append((node, node.children))
        elif sigil == "/":
            opened = stack[-1][0]
            if opened is None or opened.value != name:
                raise TemplateError(f"{{{{/{name}}}}} closes no open section", line)
            stack.pop()
        else:
            siblings.append(_Node("raw" if triple or sigil == "&" else "var", name, line))
    if len(stack) > 1:
        opened = stack[-1][0]
        assert opened is not None
        raise TemplateError(f"section {{{{#{opened.value}}}}} is never closed", opened.line)
    if position < len(source):
        root.append(_Node("text", source[position:], source.count("\n", 0, position) + 1))
    return root


def _mustache_names(tree: list[_Node]) -> list[str]:
    names: list[str] = []
    for node in tree:
        if node.kind != "text" and node.value != ".":
            first = node.value.split(".")[0]
            if first not in names:
                names.append(first)
        names += [n for n in _mustache_names(node.children) if n not in names]
    return names


def _lookup(scopes: list[Any], name: str) -> Any:
    if name == ".":
        return scopes[-1]
    head, *rest = name.split(".")
    for scope in reversed(scopes):
        if isinstance(scope, Mapping) and head in scope:
            value = scope[head]
            for part in rest:
                value = value.get(part) if isinstance(value, Mapping) else None
            return value
    return None


def _mustache(source: str) -> Template:
    tree = _mustache_tree(source)

    def emit(nodes_: list[_Node], scopes: list[Any], out: list[str], size: list[int]) -> None:
        budget = _budget()
        for node in nodes_:
            budget.step()
            if node.kind == "text":
                text = node.value
            elif node.kind in ("var", "raw"):
                head = node.value.split(".")[0]
                if len(scopes) == 1 and node.value != "." and head not in scopes[0]:
                    # As Jinja2's StrictUndefined: a field missing from the row is an error, not "".
                    raise TemplateError(f"the row has no field `{head}`", node.line)
                value = _lookup(scopes, node.value)
                text = to_text(value) if not isinstance(value, bool) else str(value).lower()
                text = html.escape(text) if node.kind == "var" else text
            else:
                value = _lookup(scopes, node.value)
                empty = value in (None, False, "", 0) or (isinstance(value, list | tuple) and not value)
                if node.kind == "inverted":
                    if empty:
                        emit(node.children, scopes, out, size)
                elif not empty:
                    items = value if isinstance(value, list | tuple) else [value]
                    for item in items:
                        budget.step()
                        emit(node.children, [*scopes, item], out, size)
                continue
            size[0] += len(text)
            budget.check_length(size[0])
            out.append(text)

    def render(values: Mapping[str, Any]) -> str:
        out: list[str] = []
        emit(tree, [dict(values)], out, [0])
        return "".join(out)

    return Template("mustache", source, tuple(_mustache_names(tree)), render)
