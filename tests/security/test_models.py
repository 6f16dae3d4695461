"""Model strings are policy: a head cannot make the worker call a host, or send a key, of its choosing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.pipeline.run import RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.github.conftest import app_keys, fake_github, redis, run_worker, settings  # noqa: F401  (fixtures)
from tests.github.fake_github import FakeGitHub
from tests.github.test_approval import pr  # noqa: F401  (fixture)
from tests.servers import ThreadedServer
from tests.stub_llm import StubLLM


class Canary:
    """An HTTP server on 127.0.0.1 that answers anything with a chat completion and records every request:
    the internal service an attacker would point the worker at."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

        # A plain coroutine function: uvicorn takes it for an ASGI 3 app.
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            self.requests.append({"method": scope["method"], "path": scope["path"], "headers": headers})
            answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "secret"}}]}
            start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            await send(start)
            await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

        self._http = ThreadedServer(app)
        self.port = 0

    def start(self) -> Canary:
        self._http.start()
        self.port = self._http.port
        return self

    def stop(self) -> None:
        self._http.stop()


@pytest.fixture
def canary() -> Iterator[Canary]:
    server = Canary().start()
    yield server
    server.stop()


def build(repo: GitRepo, head_model: str = "openai/stub", models: list[str] | None = None, **config: Any) -> None:
    """Suite qa (one case, `models:` as given): prompt v1.0.0 on `openai/stub` at tag base, v1.1.0 on
    `head_model` at tag head."""
    graders = config.pop("graders", [{"type": "equals"}])
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", graders, **config)
    if models is not None:
        config["suites"][0]["models"] = models
    repo.write(".evalbot.yml", config)
    repo.write("evals/qa.jsonl", [{"id": "c0", "question": "q0", "expected": "a0"}])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", model=head_model))
    repo.commit("head", tag="head")


def line_of(repo: GitRepo, path: str, text: str) -> int:
    """The 1-based line of `path` that holds `text`."""
    lines = (repo.root / path).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


async def run(repo: GitRepo, api_base: str | None, **options: Any) -> Any:
    return await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=api_base, **options))


async def test_a_url_in_a_head_prompts_model_is_refused_before_any_call(
    repo: GitRepo, stub: StubLLM, canary: Canary
) -> None:
    model = f"oobabooga/http://127.0.0.1:{canary.port}/admin#"
    build(repo, head_model=model)
    report = await run(repo, stub.base_url)
    assert report.errors == [
        f"prompts/qa.yaml:2: model {model!r} is not allowed: it contains '://', which a model name never needs"
    ]
    assert report.verdict == "error" and report.spend is None
    assert canary.requests == [] and stub.requests == []


async def test_a_huggingface_url_never_gets_the_deployments_key(
    repo: GitRepo, canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUGGINGFACE_API_KEY", "sentinel")
    model = f"huggingface/http://127.0.0.1:{canary.port}/x"
    # A similarity grader's embeddings: litellm's huggingface provider posts them, with the key, to the URL.
    build(repo, graders=[{"type": "similarity", "model": model}])
    report = await run(repo, None)
    line = line_of(repo, ".evalbot.yml", "huggingface/")
    assert report.errors == [
        f".evalbot.yml:{line}: model {model!r} is not allowed: it contains '://', which a model name never needs"
    ]
    assert canary.requests == []


async def test_a_suites_models_entry_is_refused_at_its_line(repo: GitRepo, stub: StubLLM, canary: Canary) -> None:
    model = f"oobabooga/http://127.0.0.1:{canary.port}/admin#"
    build(repo, models=["openai/stub", model])
    report = await run(repo, stub.base_url)
    line = line_of(repo, ".evalbot.yml", "oobabooga/")
    assert report.errors == [
        f".evalbot.yml:{line}: model {model!r} is not allowed: it contains '://', which a model name never needs"
    ]
    assert canary.requests == [] and stub.requests == []


async def test_a_judges_model_is_refused_at_its_line(repo: GitRepo, stub: StubLLM, canary: Canary) -> None:
    model = f"oobabooga/http://127.0.0.1:{canary.port}/admin#"
    build(repo, graders=[{"type": "rubric", "criteria": ["correctness"], "model": model}])
    report = await run(repo, stub.base_url)
    line = line_of(repo, ".evalbot.yml", "oobabooga/")
    assert report.errors == [
        f".evalbot.yml:{line}: model {model!r} is not allowed: it contains '://', which a model name never needs"
    ]
    assert canary.requests == [] and stub.requests == []


async def test_allowed_models_come_from_the_base_and_never_allow_url_syntax(repo: GitRepo, stub: StubLLM) -> None:
    # The base allows everything (`*`), yet a model string with `@` (user-info syntax) stays refused;
    # and a head's own `allowed_models` does not widen the base's.
    repo.write(".evalbot.yml", suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [], allowed_models=["*"]))
    repo.write("evals/qa.jsonl", [{"id": "c0", "question": "q0"}])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", model="openai/gpt-4o@evil.example"))
    repo.commit("head", tag="head")
    report = await run(repo, stub.base_url)
    assert report.errors == [
        "prompts/qa.yaml:2: model 'openai/gpt-4o@evil.example' is not allowed: it contains '@', which a model "
        "name never needs"
    ]

    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [], allowed_models=["openai/stub"])
    repo.write(".evalbot.yml", config)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.commit("base allows only the stub", tag="base2")
    config["allowed_models"] = ["*"]
    repo.write(".evalbot.yml", config)
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", model="anthropic/claude-opus-4"))
    repo.commit("head widens its own policy", tag="head2")
    report = await evaluate(GitSource(repo.root), "base2", "head2", RunOptions(api_base=stub.base_url))
    assert report.errors == [
        "prompts/qa.yaml:2: model 'anthropic/claude-opus-4' is not allowed: it matches no pattern of "
        "`allowed_models` in the base branch's .evalbot.yml"
    ]
    assert stub.requests == []


def test_cli_models_option_with_a_refused_model_exits_2(repo: GitRepo, stub: StubLLM, canary: Canary) -> None:
    build(repo)
    model = f"oobabooga/http://127.0.0.1:{canary.port}/admin#"
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    result = CliRunner().invoke(cli, [*args, "--models", f"openai/stub,{model}"])
    assert result.exit_code == 2
    assert result.output == (
        f"error: --models: model {model!r} is not allowed: it contains '://', which a model name never needs\n"
    )
    assert canary.requests == [] and stub.requests == []


@pytest.mark.slow
async def test_eval_command_with_a_refused_model_is_refused(
    pr: Any,  # noqa: F811  (the fixture imported above)
    fake_github: FakeGitHub,  # noqa: F811
    stub: StubLLM,
    canary: Canary,
) -> None:
    fake_github.permissions["lead"] = "write"
    pull = await pr(["lead"])
    await pull.opened()
    calls = len(stub.requests)
    model = f"oobabooga/http://127.0.0.1:{canary.port}/admin#"
    await pull.comment("lead", f"/eval --models {model}")
    # The reason is untrusted text: the URL in it is kept from becoming a link (a zero-width space).
    shown = model.replace("http://", "http:\u200b//")
    assert pull.replies()[-1] == (
        f"@lead `/eval --models {model}`: `--models`: model '{shown}' is not allowed: it contains '://', which a "
        "model name never needs\n"
    )
    assert len(stub.requests) == calls and canary.requests == []


async def test_a_base_prompt_on_a_refused_model_is_not_called(repo: GitRepo, stub: StubLLM) -> None:
    # The base tightened its policy: its own prompt's model is no longer allowed, the change moves off it.
    config = suite_config(
        "qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}], allowed_models=["openai/stub"]
    )
    repo.write(".evalbot.yml", config)
    repo.write("evals/qa.jsonl", [{"id": "c0", "question": "q0", "expected": "a0"}])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", model="openai/old"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0"))
    repo.commit("head", tag="head")
    report = await run(repo, stub.base_url)
    assert report.errors == [] and report.suites[0].base is None
    assert (
        "prompts/qa.yaml: the base's model 'openai/old' is not allowed by the base's policy: the head is "
        in (report.warnings[0])
    )
    assert [r["model"] for r in stub.requests] == ["stub"]
