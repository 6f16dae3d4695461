"""Prompt templates: fstring, Jinja2 (sandboxed) and Mustache, each rendered within a budget."""

from __future__ import annotations

import tracemalloc

import pytest

from bot.pipeline.templates import (
    MAX_RENDER_CHARS,
    TemplateError,
    TemplateLimitError,
    compile_template,
)

# Ten lists of ten references to the level below, 12 levels deep: 10^12 items when printed.
NESTED = "{% set a = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1] %}" + "".join(
    f"{{% set {b} = [{a}, {a}, {a}, {a}, {a}, {a}, {a}, {a}, {a}, {a}] %}}"
    for a, b in zip("abcdefghijkl", "bcdefghijklz", strict=True)
)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


@pytest.mark.parametrize(
    ("fmt", "source", "variables", "rendered"),
    [
        ("fstring", "Q: {question} ({lang}) {{literal}}", ("question", "lang"), "Q: What? (en) {literal}"),
        (
            "jinja2",
            "Q: {{ question | upper }}{% if lang %} ({{ lang }}){% endif %}",
            ("lang", "question"),
            "Q: WHAT? (en)",
        ),
        ("jinja2", "{% set n = 2 %}{% for i in range(n) %}{{ question }}{% endfor %}", ("question",), "What?What?"),
        (
            "mustache",
            "Q: {{question}}{{#lang}} ({{.}}){{/lang}}{{^missing}}!{{/missing}}",
            ("question", "lang", "missing"),
            "Q: What? (en)!",
        ),
    ],
)
def test_each_format_renders_and_names_its_variables(
    fmt: str, source: str, variables: tuple[str, ...], rendered: str
) -> None:
    template = compile_template(source, fmt)  # type: ignore[arg-type]
    assert template.variables == variables
    assert template.render({"question": "What?", "lang": "en"}) == rendered


def test_mustache_escapes_html_in_double_braces_only_as_the_spec_says() -> None:
    template = compile_template("{{a}} {{{a}}} {{&a}}", "mustache")
    assert template.render({"a": "<b>&"}) == "&lt;b&gt;&amp; <b>& <b>&"


@pytest.mark.parametrize("fmt", ["fstring", "jinja2", "mustache"])
def test_a_missing_field_is_an_error_naming_it(fmt: str) -> None:
    source = {
        "fstring": "line one\nQ: {question}",
        "jinja2": "line one\nQ: {{ question }}",
        "mustache": "line one\nQ: {{question}}",
    }[fmt]
    with pytest.raises(TemplateError) as info:
        compile_template(source, fmt).render({"other": 1})  # type: ignore[arg-type]
    assert "question" in info.value.message
    if fmt != "fstring":
        assert info.value.line == 2


@pytest.mark.parametrize("fmt", ["fstring", "jinja2"])
def test_a_chat_list_prints_as_text_never_as_a_python_repr(fmt: str) -> None:
    source = "Conversation:\n{input}" if fmt == "fstring" else "Conversation:\n{{ input }}"
    text = compile_template(source, fmt).render({"input": CHAT})  # type: ignore[arg-type]
    assert text == "Conversation:\nsystem: Be brief.\nuser: Capital of France?"
    # Iterated in Jinja2, it is the messages themselves.
    loop = compile_template("{% for m in input %}[{{ m.role }}]{% endfor %}", "jinja2")
    assert loop.render({"input": CHAT}) == "[system][user]"


@pytest.mark.parametrize(
    ("source", "error", "line"),
    [
        (
            "{% for i in range(9999) %}{% for j in range(9999) %}{% for k in range(9999) %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "to render one row",  # more than 200,000 steps, or 1 s, whichever comes first
            1,
        ),
        (
            "{% for i in range(9999) %}{% for j in range(9999) %}{{ j }}{% endfor %}{% endfor %}",
            "over 100,000 characters",
            None,
        ),
        ("{{ 'x' * 1000000000 }}", "a repeated string or list would be over", 1),
        ("{{ [1] * 10**9 }}", "a repeated string or list would be over", 1),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "a concatenation",
            1,
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "a value would be over",
            1,
        ),
        (
            "{% set s %}ab{% endset %}" + "{% set s %}{{ s }}{{ s }}{% endset %}" * 40 + "{{ s|length }}",
            "a block of text would be over",
            1,
        ),
        ("{{ 'x'|center(1000000000) }}", "an argument of 1,000,000,000 is over", 1),
        (NESTED + "{{ z }}", "a value would print as over 100,000 characters", 1),
        (NESTED + "{{ z ~ '' }}", "a value would print as over 100,000 characters", 1),
        (NESTED + "{{ z|string }}", "a value would print as over 100,000 characters", 1),
        (NESTED + "{{ z|sum(start=[])|tojson }}", "a value would print as over 100,000 characters", 1),
        (NESTED + "{{ [z] * 2 }}", "a value would print as over 50,000 characters", 1),
        ("{{ range(9999)|join('x' * 9999) }}", "the joined text would be over", 1),
        ("{{ ('a' * 90000)|replace('a', 'b' * 9000) }}", "the replaced text would be over", 1),
        ("{{ (['y' * 90000] * 90)|join }}", "a value would print as over", 1),
        ("{{ ('\\t' * 9000).expandtabs(9000) }}", "the method .expandtabs() is not available", 1),
        ("{{ '{:>999999999}'.format(1) }}", "the method .format() is not available", 1),
        ("{{ '%0999999999d' % 1 }}", "an argument of 999,999,999 is over", 1),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses too deeply", None),
        (
            "ok\n{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "access to attribute '__class__' of 'str' object is unsafe",
            2,
        ),
    ],
)
def test_a_hostile_jinja_template_ends_in_a_clear_error_within_bounded_time_and_memory(
    source: str, error: str, line: int | None
) -> None:
    template = compile_template(source, "jinja2")
    tracemalloc.start()
    try:
        # Unbounded, these render for minutes or until memory runs out: the per-test timeout or the
        # memory bound below would fail the test.
        with pytest.raises(TemplateLimitError) as info:
            template.render({})
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error in info.value.message
    if line is not None:
        assert info.value.line == line
    assert peak_bytes < 20 * MAX_RENDER_CHARS * 8


@pytest.mark.parametrize(
    ("fmt", "source", "error", "line"),
    [
        ("jinja2", "Hello\n{% include 'secrets.txt' %}", "{% include %} is not supported", 2),
        ("jinja2", "{% extends 'base.j2' %}", "{% extends %} is not supported", 1),
        ("jinja2", "{% from 'macros.j2' import m %}", "{% import %} is not supported", 1),
        ("jinja2", "{% for x in y %}", "Jinja2 syntax error", 1),
        ("mustache", "Hi\n{{> partial}}", "partials ({{> partial}}) are not supported", 2),
        ("mustache", "{{=<% %>=}}", "changing delimiters", 1),
        ("mustache", "{{#a}}x", "section {{#a}} is never closed", 1),
        ("fstring", "{x.__class__}", "placeholder {x.__class__} is not a plain name", None),
    ],
)
def test_templates_that_would_read_files_or_run_code_do_not_compile(
    fmt: str, source: str, error: str, line: int | None
) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(source, fmt)  # type: ignore[arg-type]
    assert error in info.value.message
    assert info.value.line == line


def test_the_sole_variable_of_a_template_is_found_in_each_format() -> None:
    assert compile_template(" {input} ", "fstring").sole_variable == "input"
    assert compile_template("{{- input }}", "jinja2").sole_variable == "input"
    assert compile_template("{{{input}}}", "mustache").sole_variable == "input"
    assert compile_template("Q: {input}", "fstring").sole_variable is None


def test_nested_mustache_sections_over_a_long_list_stop_at_the_budget() -> None:
    # No output at all: the steps (or the time) are what stop it.
    template = compile_template("{{#xs}}{{#xs}}{{#xs}}{{!x}}{{/xs}}{{/xs}}{{/xs}}", "mustache")
    with pytest.raises(TemplateLimitError, match="to render one row"):
        template.render({"xs": list(range(1000))})
