"""The promptfoo reader: prompts, providers, tests and assertions read as promptfoo reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import InputError
from bot.pipeline.formats import promptfoo as pf

FIXTURE = Path(__file__).parents[2] / "fixtures" / "formats" / "promptfoo" / "support-bot"
CONFIG = "evals/promptfooconfig.yaml"


def files_of(files: dict[str, str]) -> tuple[pf.ReadFile, pf.ListFiles]:
    async def read(path: str) -> str | None:
        return files.get(path)

    async def glob(pattern: str) -> list[str]:
        return sorted(files)

    return read, glob


async def parse(config: str, files: dict[str, str] | None = None) -> pf.PromptfooConfig:
    read, glob = files_of(files or {})
    return await pf.parse_promptfoo(config, CONFIG, read, glob)


def fixture_files() -> dict[str, str]:
    return {f"evals/{p.relative_to(FIXTURE)}": p.read_text() for p in FIXTURE.rglob("*") if p.is_file()}


async def test_the_fixture_project_reads_in_place() -> None:
    files = fixture_files()
    config = await parse(files[CONFIG], files)
    assert [p.label for p in config.prompts] == ["answer", "chat"]
    assert config.prompts[0].messages == (
        ("user", "You are a support agent for Acme Store. Answer briefly.\n\nCustomer question: {{question}}"),
    )
    assert [role for role, _ in config.prompts[1].messages] == ["system", "user"]
    assert [(p.model, p.temperature, p.max_tokens) for p in config.providers] == [("openai/stub", 0.0, 64)]
    assert len(config.tests) == 7
    assert sorted(config.files) == sorted(
        [
            CONFIG,
            "evals/prompts/answer.txt",
            "evals/prompts/chat.json",
            "evals/tests/cases.csv",
            "evals/context/policy.txt",
        ]
    )
    first = config.tests[0]
    assert first.description == "capital"
    assert first.vars == {
        "policy": "Refunds within 30 days. Orders ship in 2 business days.",
        "question": "What is the capital of France?",
    }
    # defaultTest's assertions first, then the row's own __expected columns.
    assert [(a.type, a.value) for a in first.assertions] == [
        ("not-icontains", "as an AI"),
        ("latency", None),
        ("icontains", "paris"),
        ("contains", "Paris"),
    ]
    assert first.assertions[2].line == 2 and first.assertions[2].path == "evals/tests/cases.csv"
    # A file:// var is the file's text.
    json_test = config.tests[5]
    assert json_test.vars["policy"] == "Refunds within 30 days. Orders ship in 2 business days.\n"
    assert [a.type for a in json_test.assertions] == ["not-icontains", "latency", "is-json", "contains-json"]
    # The javascript assertion is listed, with its line, never run.
    assert config.not_run == [
        pf.NotRun("javascript", CONFIG, 38, "runs code or calls a URL the pull request controls", 1)
    ]


@pytest.mark.parametrize(
    ("cell", "assertion"),
    [
        ("Paris", {"type": "equals", "value": "Paris"}),
        ("contains:Paris", {"type": "contains", "value": "Paris"}),
        ("icontains: paris ", {"type": "icontains", "value": "paris"}),
        ("not-contains:yes", {"type": "not-contains", "value": "yes"}),
        ('contains-any:a, "b, c"', {"type": "contains-any", "value": ["a", "b, c"]}),
        ("regex:^\\d+$", {"type": "regex", "value": "^\\d+$"}),
        ("starts-with:Hi", {"type": "starts-with", "value": "Hi", "threshold": 0.75}),
        ("levenshtein(3):Paris", {"type": "levenshtein", "value": "Paris", "threshold": 3.0}),
        ("levenshtein:Paris", {"type": "levenshtein", "value": "Paris", "threshold": 0.75}),
        ("similar:Paris", {"type": "similar", "value": "Paris", "threshold": 0.8}),
        ("is-json", {"type": "is-json", "value": None}),
        ("grade:is polite", {"type": "llm-rubric", "value": "is polite"}),
        ("fn:output.length > 3", {"type": "javascript", "value": "output.length > 3"}),
        ("javascript: 1", {"type": "javascript", "value": "1"}),
        ("eval:true", {"type": "javascript", "value": "true"}),
        ("python:len(output) > 1", {"type": "python", "value": "len(output) > 1"}),
        ("file://check.py", {"type": "python", "value": "check.py"}),
        ("contains", {"type": "contains", "value": None}),
        ("unknownthing:x", {"type": "equals", "value": "unknownthing:x"}),
    ],
)
def test_csv_expected_cells_parse_as_promptfoo_parses_them(cell: str, assertion: dict[str, object]) -> None:
    assert pf.assertion_from_string(cell) == assertion


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai:gpt-4o-mini", "openai/gpt-4o-mini"),
        ("openai:chat:gpt-4o", "openai/gpt-4o"),
        ("anthropic:messages:claude-3-5-sonnet-20241022", "anthropic/claude-3-5-sonnet-20241022"),
        ("ollama:chat:llama3", "ollama_chat/llama3"),
        ("ollama:llama3", "ollama/llama3"),
        ("azure:chat:my-deployment", "azure/my-deployment"),
        ("vertex:gemini-1.5-pro", "vertex_ai/gemini-1.5-pro"),
        ("echo", None),
        ("exec:./run.sh", None),
        ("https://example.com/api", None),
        ("python:provider.py", None),
    ],
)
def test_provider_ids_map_to_litellm_models(provider: str, model: str | None) -> None:
    assert pf.provider_model(provider) == model


async def test_an_unmapped_provider_is_an_error_naming_its_line() -> None:
    config = "prompts: ['Q: {{q}}']\nproviders:\n  - openai:gpt-4o-mini\n  - id: exec:./bot.sh\n"
    with pytest.raises(InputError) as caught:
        await parse(config)
    assert caught.value.path == CONFIG and caught.value.line == 4
    assert "provider 'exec:./bot.sh' has no litellm equivalent" in caught.value.message


async def test_provider_objects_keep_their_config() -> None:
    config = (
        "prompts: ['Q: {{q}}']\nproviders:\n  - id: anthropic:messages:claude-3-haiku\n    label: haiku\n"
        "    config: {temperature: 0.2, max_tokens: 100, apiBaseUrl: 'http://localhost:9'}\n"
        "  - openai:gpt-4o: {config: {temperature: 1}}\n"
    )
    providers = (await parse(config)).providers
    assert [(p.model, p.label, p.temperature, p.max_tokens, p.api_base) for p in providers] == [
        ("anthropic/claude-3-haiku", "haiku", 0.2, 100, "http://localhost:9"),
        ("openai/gpt-4o", None, 1.0, None, None),
    ]


@pytest.mark.parametrize(
    ("ref", "line"),
    [("file:///home/ana/prompts/a.txt", 2), ("file://../../secrets.txt", 2), ("file://~/a.txt", 2)],
)
async def test_a_file_path_outside_the_repository_is_an_error_naming_its_line(ref: str, line: int) -> None:
    with pytest.raises(InputError) as caught:
        await parse(f"prompts:\n  - {ref}\nproviders: [openai:gpt-4o-mini]\n")
    assert caught.value.line == line and caught.value.path == CONFIG
    assert "file://" in caught.value.message


async def test_a_relative_path_inside_the_repository_resolves_from_the_config() -> None:
    files = {"prompts/shared.txt": "Shared: {{q}}"}
    config = await parse("prompts: [file://../prompts/shared.txt]\nproviders: [openai:gpt-4o-mini]\n", files)
    assert config.prompts[0].messages == (("user", "Shared: {{q}}"),)
    assert config.prompts[0].label == "prompts/shared.txt"


async def test_a_txt_file_splits_on_separator_lines_and_globs_list_files() -> None:
    files = {
        "evals/p/a.txt": "First {{q}}\n---\n\nSecond {{q}}\n",
        "evals/p/b.txt": "Third {{q}}",
        "evals/other.md": "x",
    }
    config = await parse("prompts: [file://p/*.txt]\nproviders: [openai:gpt-4o-mini]\n", files)
    assert [(p.label, p.messages[0][1]) for p in config.prompts] == [
        ("evals/p/a.txt#1", "First {{q}}"),
        ("evals/p/a.txt#2", "Second {{q}}"),
        ("evals/p/b.txt", "Third {{q}}"),
    ]


async def test_a_yaml_chat_prompt_and_inline_prompts() -> None:
    files = {"evals/chat.yaml": "- role: system\n  content: Be brief.\n- role: user\n  content: '{{q}}'\n"}
    config = await parse(
        "prompts:\n  - file://chat.yaml\n  - 'Inline {{q}}'\n  - {raw: 'Raw {{q}}', label: raw}\n"
        "providers: [openai:o]\n",
        files,
    )
    assert [(p.label, p.messages) for p in config.prompts] == [
        ("evals/chat.yaml", (("system", "Be brief."), ("user", "{{q}}"))),
        ("prompt 2", (("user", "Inline {{q}}"),)),
        ("raw", (("user", "Raw {{q}}"),)),
    ]


async def test_a_prompt_function_is_refused() -> None:
    with pytest.raises(InputError, match="prompt function: evalbot does not run code"):
        await parse("prompts: ['file://prompt.py:make']\nproviders: [openai:o]\n", {"evals/prompt.py": ""})


async def test_per_test_assertions_apply_to_their_test_only_and_values_render_with_vars() -> None:
    config = await parse(
        "prompts: ['{{q}}']\nproviders: [openai:o]\n"
        "defaultTest:\n  vars: {city: Paris}\n  assert:\n    - {type: icontains, value: '{{city}}'}\n"
        "tests:\n"
        "  - vars: {q: a}\n    assert: [{type: equals, value: 'x {{q}}'}]\n"
        "  - vars: {q: b, city: Lyon}\n"
    )
    assert [[(a.type, a.value) for a in t.assertions] for t in config.tests] == [
        [("icontains", "Paris"), ("equals", "x a")],
        [("icontains", "Lyon")],
    ]


async def test_list_vars_expand_into_one_test_per_combination() -> None:
    config = await parse("prompts: ['{{a}}{{b}}']\nproviders: [openai:o]\ntests:\n  - vars: {a: [1, 2], b: [x, y]}\n")
    assert [t.vars for t in config.tests] == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]


async def test_tests_from_yaml_and_jsonl_files() -> None:
    files = {
        "evals/t.yaml": "- vars: {q: a}\n  assert: [{type: contains, value: a}]\n- vars: {q: b}\n",
        "evals/t.jsonl": '{"vars": {"q": "c"}, "assert": [{"type": "regex", "value": "c"}]}\n\n{"vars": {"q": "d"}}\n',
    }
    config = await parse("prompts: ['{{q}}']\nproviders: [openai:o]\ntests: [file://t.yaml, file://t.jsonl]\n", files)
    assert [(t.vars["q"], [a.type for a in t.assertions], t.line) for t in config.tests] == [
        ("a", ["contains"], 1),
        ("b", [], 3),
        ("c", ["regex"], 1),
        ("d", [], 3),
    ]


async def test_code_and_unknown_assertions_are_listed_by_type_and_line() -> None:
    config = await parse(
        "prompts: ['{{q}}']\nproviders: [openai:o]\n"
        "defaultTest:\n  assert:\n    - {type: python, value: 'True'}\n"
        "tests:\n"
        "  - vars: {q: a}\n    assert:\n      - {type: webhook, value: 'https://x'}\n      - {type: moderation}\n"
        "      - {type: contains, value: a, transform: output.trim()}\n"
        "  - vars: {q: b}\n"
    )
    assert [t.assertions for t in config.tests] == [(), ()]
    assert config.not_run == [
        pf.NotRun("python", CONFIG, 5, "runs code or calls a URL the pull request controls", 2),
        pf.NotRun("webhook", CONFIG, 9, "runs code or calls a URL the pull request controls", 1),
        pf.NotRun("moderation", CONFIG, 10, "evalbot has no grader for it", 1),
        pf.NotRun("contains", CONFIG, 11, "its `transform` runs code", 1),
    ]


async def test_a_missing_file_and_a_latency_without_threshold_are_errors() -> None:
    with pytest.raises(InputError, match=r"evals/tests\.csv does not exist"):
        await parse("prompts: ['{{q}}']\nproviders: [openai:o]\ntests: file://tests.csv\n")
    with pytest.raises(InputError, match="latency needs a threshold") as caught:
        await parse("prompts: ['{{q}}']\nproviders: [openai:o]\ntests:\n  - assert: [{type: latency}]\n")
    assert caught.value.line == 4


async def test_repeated_prompt_labels_are_refused() -> None:
    with pytest.raises(InputError, match="distinct labels"):
        await parse("prompts:\n  - {raw: a, label: x}\n  - {raw: b, label: x}\nproviders: [openai:o]\n")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("evals/p/*.txt", "evals/p/a.txt", True),
        ("evals/p/*.txt", "evals/p/sub/a.txt", False),
        ("evals/**/*.txt", "evals/p/sub/a.txt", True),
        ("evals/**/*.txt", "evals/a.txt", True),
        ("evals/p/?.txt", "evals/p/ab.txt", False),
        ("evals/[ab].csv", "evals/b.csv", True),
    ],
)
def test_globs_match_within_a_directory_unless_doubled(pattern: str, path: str, matches: bool) -> None:
    assert pf.glob_match(pattern, path) is matches


async def test_sources_list_the_files_under_a_directory(tmp_path: Path) -> None:
    from bot.pipeline.source import GitSource, WorkTreeSource
    from tests.conftest import GitRepo

    repo = GitRepo(tmp_path / "repo")
    for path in ("evals/p/a.txt", "evals/p/sub/b.txt", "evals/q.txt", "README.md"):
        repo.write(path, "x")
    repo.commit("files", tag="head")
    expected = ["evals/p/a.txt", "evals/p/sub/b.txt"]
    assert await GitSource(repo.root).list_files("head", "evals/p") == expected
    assert await WorkTreeSource(repo.root).list_files("", "evals/p") == expected
    assert len(await GitSource(repo.root).list_files("head", "")) == 4


async def test_a_hostile_assertion_value_ends_in_an_input_error_within_the_template_budget() -> None:
    loop = "{% for i in range(99999999) %}{{ q }}{% endfor %}"
    config = "prompts: ['{{q}}']\nproviders: [openai:o]\ntests:\n  - vars: {q: a}\n    assert:\n"
    config += f"      - type: contains\n        value: '{loop}'\n"
    with pytest.raises(InputError) as caught:
        await parse(config)
    assert caught.value.line == 6
    assert caught.value.message.startswith("contains: its value cannot be rendered with the test's vars: ")
