"""Generated files and webhook deliveries: a result, an InputError with a message, or a 4xx; never a crash."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from arq import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import InputError
from bot.pipeline.config import parse_config
from bot.pipeline.datasets import parse_dataset
from bot.pipeline.prompts import parse_prompt
from bot.settings import Settings
from tests.github.conftest import SECRET, fixture, webhook_client

# Deterministic and quick: the same examples every run, a few seconds in all.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# Pieces of YAML syntax that parsers trip on: anchors, aliases, tags, flow collections, documents.
YAML_PIECES = ["&a ", "*a", "!!python/object:os.system ", "!!binary ", ": ", "- ", "{", "}", "[", "]", "'", '"',
               "\t", "\n", "---\n", "...\n", "%YAML 1.1\n", "? ", "|\n  ", ">\n  ", "<<: *a\n", "#", "{x}",
               "{{"]  # fmt: skip
yaml_noise = st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=8), max_size=25).map("".join)
yaml_text = st.one_of(values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)), yaml_noise)
template = st.lists(st.sampled_from(["{", "}", "{question}", "{0}", "{a.b}", "{x!r}", "{:>{w}}", "q", " "]), max_size=8)

prompts = st.one_of(
    yaml_text,
    st.fixed_dictionaries(
        {
            "version": st.sampled_from(["1.0.0", "1", "", "v2", "1.0.0-rc.1"]) | scalars,
            "model": st.sampled_from(["openai/gpt-4o-mini", "", "x://y"]) | scalars,
            "system_prompt": st.text(max_size=20) | values,
            "user_prompt_template": template.map("".join) | values,
        },
        optional={"temperature": scalars, "max_tokens": scalars, "tools": values, "extra": values},
    ).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
)
configs = st.one_of(
    yaml_text,
    st.fixed_dictionaries(
        {},
        optional={
            "approvers": values,
            "judge": scalars,
            "budget": values,
            "thresholds": values,
            "prices": values,
            "suites": st.lists(
                st.fixed_dictionaries(
                    {"name": scalars, "prompt": scalars, "dataset": scalars},
                    optional={"graders": values, "models": values, "repeats": scalars, "schema": scalars},
                ),
                max_size=3,
            )
            | values,
        },
    ).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
)


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


datasets = st.one_of(
    st.tuples(st.just("evals/x.yaml"), yaml_text),
    st.tuples(st.just("evals/x.json"), values.map(json.dumps) | st.text(max_size=40)),
    st.tuples(
        st.just("evals/x.jsonl"),
        st.lists(values.map(json.dumps) | st.text(max_size=20), max_size=6).map("\n".join),
    ),
    st.tuples(
        st.just("evals/x.csv"),
        st.lists(st.lists(st.text(max_size=10), max_size=4), max_size=6).map(_csv) | st.text(max_size=60),
    ),
)


def parses_or_explains(parse: Callable[[], Any]) -> None:
    try:
        parse()
    except InputError as exc:
        assert str(exc).strip(), "an InputError without a message"


@pytest.mark.slow
@FUZZ
@given(datasets)
def test_datasets_parse_or_explain(case: tuple[str, str]) -> None:
    path, text = case
    parses_or_explains(lambda: parse_dataset(text, path))


@FUZZ
@given(prompts)
def test_prompts_parse_or_explain(text: str) -> None:
    parses_or_explains(lambda: parse_prompt(text, "prompts/x.yaml"))


@FUZZ
@given(configs)
def test_configs_parse_or_explain(text: str) -> None:
    parses_or_explains(lambda: parse_config(text))


def _mutated(payload: Any, path: list[str | int], value: Any) -> Any:
    """`payload` with the value at `path` (as far as it goes) replaced."""
    if not path or not isinstance(payload, dict | list):
        return value
    key, rest = path[0], path[1:]
    if isinstance(payload, dict) and isinstance(key, str) and key in payload:
        return {**payload, key: _mutated(payload[key], rest, value)}
    if isinstance(payload, list) and isinstance(key, int) and 0 <= key < len(payload):
        return [*payload[:key], _mutated(payload[key], rest, value), *payload[key + 1 :]]
    return payload


EVENTS = ["pull_request", "issue_comment", "check_run", "check_suite", "ping", "installation", "merge_group", "x"]
FIXTURES = {
    "pull_request.opened.json": "pull_request",
    "issue_comment.created.on-pr.DERIVED.json": "issue_comment",
    "check_run.rerequested.json": "check_run",
    "check_run.requested_action.json": "check_run",
}
KEYS = ["pull_request", "issue", "comment", "check_run", "repository", "installation", "head", "base", "number",
        "sha", "body", "user", "login", "id", "pull_requests", "requested_action", "action", "draft", 0]  # fmt: skip


@st.composite
def mutated_payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real payload, under its own event, with one value (at a path of its keys) swapped for anything."""
    name = draw(st.sampled_from(sorted(FIXTURES)))
    payload: Any = fixture(name)
    path: list[str | int] = []
    node = payload
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(node, dict | list) or not node:
            break
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    if draw(st.booleans()):
        path = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3))
    # Often a value of the wrong shape: a list, text or number where an object was.
    value = draw(st.one_of(st.lists(scalars, min_size=1, max_size=2), st.text(min_size=1, max_size=5), values))
    return FIXTURES[name], json.dumps(_mutated(payload, path, value)).encode()


deliveries = st.tuples(
    st.one_of(
        st.tuples(st.sampled_from(EVENTS) | st.text(max_size=10), st.binary(max_size=200)),
        st.tuples(st.sampled_from(EVENTS), values.map(lambda v: json.dumps(v).encode())),
        mutated_payloads(),
        mutated_payloads(),
    ),
    st.sampled_from(["signed", "signed", "signed", "unsigned", "sha1", "garbage"]),
    st.booleans(),
)


@FUZZ
@given(deliveries)
async def test_webhook_answers_4xx_or_2xx(redis: ArqRedis, settings: Settings, delivery: Any) -> None:
    (event, body), signing, with_id = delivery
    headers = {"X-GitHub-Event": event.encode("ascii", "replace").decode()}
    if signing == "signed":
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    elif signing == "sha1":
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    elif signing == "garbage":
        headers["X-Hub-Signature-256"] = "sha256=zz"
    if with_id:  # a fresh id each time: a repeated one is answered "duplicate" before routing
        headers["X-GitHub-Delivery"] = str(uuid.uuid4())
    async with webhook_client(settings, redis) as http:
        response = await http.post("/api/github/webhooks", content=body, headers=headers)
    assert response.status_code < 500, response.text
    assert 200 <= response.status_code < 300 or signing != "signed" or response.json()["outcome"].startswith("rejected")
