"""`.evalbot.yml`: policy (approvers, judge, budget, thresholds, prices, allowed models) and suites (DESIGN.md §4)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

import regex
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from bot.pipeline.source import path_problem
from bot.pipeline.yamlio import line_of, load_yaml, validate_model

CONFIG_PATH = ".evalbot.yml"
DEFAULT_JUDGE = "openai/gpt-4o-mini"
# The budget of a run when `.evalbot.yml` sets none: every run is bounded.
DEFAULT_BUDGET_USD = 10.0
# Spend across runs when `.evalbot.yml` sets none: a pull request's runs (`/eval` again and again), and an
# installation's runs in one UTC day.
DEFAULT_PULL_REQUEST_BUDGET_USD = 50.0
DEFAULT_DAILY_BUDGET_USD = 200.0
# Without `allowed_models:`, these providers may be called as `provider/name`: litellm sends their calls
# to the provider's own API (or the deployment's base URL setting), whatever the name says. Left out on
# purpose: huggingface and oobabooga (a URL in the model string is where the call goes), and ollama,
# vllm, hosted_vllm, lm_studio, llamafile (they default to a server on the worker's own network).
DEFAULT_MODEL_PROVIDERS = (
    "openai",
    "anthropic",
    "azure",
    "gemini",
    "vertex_ai",
    "bedrock",
    "mistral",
    "groq",
    "cohere",
    "together_ai",
    "fireworks_ai",
    "deepseek",
    "xai",
)
# Refused in any model string, whatever `allowed_models` says: URL syntax that could make a provider
# prefix (or a URL-building provider) send the call, and the deployment's key, to another host.
REFUSED_IN_MODELS = ("://", "#", "?", "@", "%", "\\")


def model_refusal(model: str, allowed_models: Sequence[str] | None) -> str | None:
    """Why the base's policy refuses to call `model`, or None when it may be called.

    Args:
        model: a litellm model string from a prompt, a suite, a grader or a command.
        allowed_models: the base's `allowed_models:` glob patterns; None for the default providers.
    """
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in model):
        return "it contains whitespace or control characters"
    refused = [part for part in REFUSED_IN_MODELS if part in model]
    if refused:
        return f"it contains {refused[0]!r}, which a model name never needs"
    provider, _, name = model.partition("/")
    segments = name.split("/")
    if not provider or "" in segments or ".." in segments:
        return "it is not of the form provider/name"
    if allowed_models is None:
        if provider not in DEFAULT_MODEL_PROVIDERS:
            return (
                f"provider {provider!r} is not one of the default providers ({', '.join(DEFAULT_MODEL_PROVIDERS)}); "
                f"the base branch's {CONFIG_PATH} can allow it with `allowed_models:`"
            )
    elif not any(fnmatchcase(model, pattern) for pattern in allowed_models):
        return f"it matches no pattern of `allowed_models` in the base branch's {CONFIG_PATH}"
    return None


class _Strict(BaseModel):
    # A typo in a config key would silently change what is evaluated: refuse unknown keys.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    accuracy_drop_pp: float = 2.0
    latency_p95_increase_pct: float = 10.0
    cost_increase_pct: float = 25.0
    hallucination_increase_pp: float = 1.0
    # "significant": a breach needs the change past the threshold AND significant (DESIGN.md §5);
    # "strict": the point estimate alone decides.
    gating: Literal["significant", "strict"] = "significant"
    # Fewest cases graded on both sides (paired) before a verdict means anything: fewer is no evidence.
    min_cases: int = Field(default=20, ge=1)
    # Level of the one-sided test a breach must pass (toward the harm: a drop, a rise).
    alpha: float = Field(default=0.05, gt=0, lt=0.5)


class Budget(_Strict):
    # Per run; and, across runs, per pull request (every run of it) and per installation per UTC day.
    max_cost_usd: float = Field(default=DEFAULT_BUDGET_USD, gt=0)
    max_cost_usd_per_pull_request: float = Field(default=DEFAULT_PULL_REQUEST_BUDGET_USD, gt=0)
    max_cost_usd_per_day: float = Field(default=DEFAULT_DAILY_BUDGET_USD, gt=0)


class Price(_Strict):
    input_per_1k: float = Field(ge=0)
    output_per_1k: float = Field(ge=0)


class EqualsGrader(_Strict):
    type: Literal["equals"]
    field: str = "expected"
    ignore_case: bool = False


class ContainsGrader(_Strict):
    type: Literal["contains"]
    field: str = "expected"
    ignore_case: bool = True


class RegexGrader(_Strict):
    type: Literal["regex"]
    pattern: str | None = None
    field: str | None = None
    ignore_case: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> RegexGrader:
        if (self.pattern is None) == (self.field is None):
            raise ValueError("a regex grader takes exactly one of `pattern` or `field`")
        if self.pattern is not None:
            # The engine's own module: what validates here is what runs (graders.regex).
            try:
                regex.compile(self.pattern)
            except regex.error as exc:
                raise ValueError(f"pattern is not a regular expression: {exc}") from None
        return self


class JsonSchemaGrader(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")

    @model_validator(mode="after")
    def _valid_schema(self) -> JsonSchemaGrader:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        from bot.engine.patterns import unbounded_keyword

        try:
            Draft202012Validator.check_schema(self.schema_)
        except SchemaError as exc:
            raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from None
        unbounded = unbounded_keyword(self.schema_)
        if unbounded is not None:
            raise ValueError(
                f"`{unbounded}` beside `patternProperties` is not supported (matched without a time bound)"
            )
        return self


class RubricGrader(_Strict):
    type: Literal["rubric"]
    criteria: list[str] = Field(min_length=1)
    pass_score: float = Field(default=7.0, ge=0, le=10)
    model: str | None = None


class SimilarityGrader(_Strict):
    type: Literal["similarity"]
    field: str = "expected"
    threshold: float = Field(default=0.8, ge=-1, le=1)
    model: str = "openai/text-embedding-3-small"


class HallucinationGrader(_Strict):
    type: Literal["hallucination"]
    context_field: str = "context"
    method: Literal["judge", "overlap"] = "judge"
    model: str | None = None


GraderSpec = Annotated[
    EqualsGrader
    | ContainsGrader
    | RegexGrader
    | JsonSchemaGrader
    | RubricGrader
    | SimilarityGrader
    | HallucinationGrader,
    Field(discriminator="type"),
]


Severity = Literal["fail", "warn", "off"]


class DataGates(_Strict):
    """Which data findings fail `evalbot/evals` and which only warn (flagged for the lead's review)."""

    schema_: Severity = Field(default="fail", alias="schema")
    contamination: Severity = "fail"
    drift: Severity = "warn"
    anomalies: Severity = "warn"
    duplicates: Severity = "warn"
    p_value: float = Field(default=0.05, gt=0, lt=1)
    psi_threshold: float = Field(default=0.2, gt=0)
    outlier_sigmas: float = Field(default=3.0, gt=0)
    empty_share_increase_pp: float = Field(default=10.0, ge=0)
    row_count_change_pct: float = Field(default=50.0, ge=0)


class Schedule(_Strict):
    """When the default branch is re-evaluated (read from the default branch only)."""

    # Five-field cron expression, in UTC: "0 3 * * *" is 03:00 UTC every day.
    cron: str

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a five-field cron expression (minute hour day month weekday)")
        return value


class Limits(_Strict):
    """How much a suite may make the worker read: policy, so the base branch's values apply."""

    # 1 MB = 1,000,000 bytes; GitHub's contents API serves files up to 100 MB.
    max_file_mb: float = Field(default=25.0, gt=0, le=100)
    max_cases: int = Field(default=5000, ge=1)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1_000_000)


# The fields of a suite that define its exam (DESIGN.md §6, trust model).
EXAM_FIELDS = frozenset({"graders", "repeats", "schema_", "training_data", "data_gates"})


class Suite(_Strict):
    name: str = Field(min_length=1)
    prompt: str
    dataset: str
    # The row field holding each case's id (a missing or repeated one is an input error). Unset: rows'
    # `id`, else a hash of the row. It names cases, so it is the head's, like `dataset`.
    id_field: str | None = Field(default=None, min_length=1)
    schema_: str | None = Field(default=None, alias="schema")
    models: list[str] = Field(default_factory=list)
    repeats: int = Field(default=1, ge=1, le=20)
    graders: list[GraderSpec] = Field(default_factory=list)
    training_data: str | None = None
    data_gates: DataGates = Field(default_factory=DataGates)

    @field_validator("prompt", "dataset", "schema_", "training_data")
    @classmethod
    def _inside_the_repository(cls, path: str | None) -> str | None:
        problem = None if path is None else path_problem(path)
        if problem is not None:
            raise ValueError(f"must be a path inside the repository, like evals/cases.jsonl: {problem}")
        return path

    def paths(self) -> list[str]:
        """The repository files this suite is made of."""
        return [p for p in (self.prompt, self.dataset, self.schema_, self.training_data) if p]

    def with_exam_of(self, other: Suite) -> Suite:
        """This suite's prompt and dataset, graded as `other` grades."""
        return self.model_copy(update={name: getattr(other, name) for name in EXAM_FIELDS})


# A team's slug as GitHub makes it from the team's name: lower case, runs of anything else one "-".
_TEAM_SLUG = regex.compile(r"[a-z0-9_]+(?:-[a-z0-9_]+)*")
_TEAM_SLUG_SEPARATORS = regex.compile(r"[^a-z0-9_]+")


class Config(_Strict):
    approvers: list[str] = Field(default_factory=list)
    # Whether a pull request's author may approve it when listed in `approvers`.
    allow_self_approval: bool = False
    judge: str = DEFAULT_JUDGE
    budget: Budget = Field(default_factory=Budget)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    prices: dict[str, Price] = Field(default_factory=dict)
    schedule: Schedule | None = None
    limits: Limits = Field(default_factory=Limits)
    # Glob patterns (fnmatch, case-sensitive) of the models a run may call; None: DEFAULT_MODEL_PROVIDERS.
    allowed_models: list[str] | None = None
    suites: list[Suite] = Field(default_factory=list)
    # The parsed YAML, to name the line of a value found wrong after validation (a refused model).
    _node: yaml.Node | None = PrivateAttr(default=None)

    @field_validator("approvers")
    @classmethod
    def _team_slugs(cls, approvers: list[str]) -> list[str]:
        # GitHub's team API takes a team's slug; a team written by its display name never matches
        # anyone, and would look like a working approver list.
        for entry in approvers:
            org, slash, team = entry.strip().lstrip("@").partition("/")
            if slash and not _TEAM_SLUG.fullmatch(team):
                slug = _TEAM_SLUG_SEPARATORS.sub("-", team.casefold()).strip("-")
                raise ValueError(
                    f"{entry!r} names a team by its name; approvers name teams by their slug: '@{org}/{slug}'"
                )
        return approvers

    @model_validator(mode="after")
    def _unique_suite_names(self) -> Config:
        names = [suite.name for suite in self.suites]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"suite names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def suite(self, name: str) -> Suite | None:
        return next((suite for suite in self.suites if suite.name == name), None)

    def counterpart(self, suite: Suite) -> Suite | None:
        """This config's version of another revision's `suite`: by name, else (a rename) by dataset, else
        by prompt path, so a renamed suite keeps its exam and data gates."""
        for key in ("name", "dataset", "prompt"):
            found = next((s for s in self.suites if getattr(s, key) == getattr(suite, key)), None)
            if found is not None:
                return found
        return None

    def line(self, loc: Sequence[str | int]) -> int | None:
        """The line in `.evalbot.yml` of the value at `loc` (keys and indexes), when parsed from text."""
        return line_of(self._node, loc)

    def with_policy_of(self, base: Config) -> Config:
        """This config's suites under `base`'s policy: a pull request cannot loosen its own gate.

        Each suite's exam comes from the base as well, suite by suite, when the change is planned.
        """
        # Every policy key, those added later included: prices drive the budget and the cost gate, the
        # judge grades, limits bound what the worker reads; a change may set none of them.
        return self.model_copy(update={key: getattr(base, key) for key in POLICY_KEYS})


# Every key but `suites` is policy (DESIGN.md §4): read from the base, and a change to any of them is an
# AI change a base approver must approve. Derived from the model, so a key added later is one too.
POLICY_KEYS: tuple[str, ...] = tuple(name for name in Config.model_fields if name != "suites")


def policy_values(config: Config | None) -> dict[str, Any]:
    """Each policy key's value as `.evalbot.yml` would write it; a missing file has the defaults."""
    dumped = (config or Config()).model_dump(mode="json", by_alias=True, include=set(POLICY_KEYS))
    return {key: dumped[key] for key in POLICY_KEYS}


def parse_config(text: str, path: str = CONFIG_PATH) -> Config:
    """Parse `.evalbot.yml` text.

    Raises:
        InputError: naming the file and line of a syntax or schema problem.
    """
    data, node = load_yaml(text, path)
    if data is None:
        data = {}
    config = validate_model(Config, data, path, node)
    config._node = node
    return config
