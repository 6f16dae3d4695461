"""`.evalbot.yml`: policy (approvers, judge, budget, thresholds, prices, allowed models) and suites (DESIGN.md §4)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

import regex
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from bot.errors import InputError
from bot.pipeline.attacks import load_library
from bot.pipeline.source import path_problem
from bot.pipeline.templates import TemplateFormat
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
    # A list in the row: every item must be in the answer ("all"), or one of them ("any").
    match: Literal["all", "any"] = "all"


class StartsWithGrader(_Strict):
    type: Literal["starts_with"]
    field: str = "expected"
    ignore_case: bool = False


class FuzzyMatchGrader(_Strict):
    type: Literal["fuzzy_match"]
    field: str = "expected"


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
    # The row field shown to the judge as the reference answer, when a row has one.
    field: str = "expected"
    pass_score: float = Field(default=7.0, ge=0, le=10)
    model: str | None = None


DEFAULT_EMBEDDING_MODEL = "openai/text-embedding-3-small"


class SimilarityGrader(_Strict):
    type: Literal["similarity"]
    field: str = "expected"
    threshold: float = Field(default=0.8, ge=-1, le=1)
    model: str = DEFAULT_EMBEDDING_MODEL


class HallucinationGrader(_Strict):
    type: Literal["hallucination"]
    context_field: str = "context"
    method: Literal["judge", "overlap"] = "judge"
    model: str | None = None


class _ValueOrField(_Strict):
    """A grader whose reference is inline (`value`/`values`) or each row's `field`, exactly one."""

    @model_validator(mode="after")
    def _one_source(self) -> _ValueOrField:
        inline = getattr(self, "values", getattr(self, "value", None))
        if (inline is None) == (getattr(self, "field", None) is None):
            raise ValueError(f"a {getattr(self, 'type', '')} grader takes exactly one of an inline value or `field`")
        return self


class ContainsAnyGrader(_ValueOrField):
    type: Literal["contains_any"]
    values: list[str] | None = Field(default=None, min_length=1)
    field: str | None = None
    ignore_case: bool = False


class ContainsAllGrader(_ValueOrField):
    type: Literal["contains_all"]
    values: list[str] | None = Field(default=None, min_length=1)
    field: str | None = None
    ignore_case: bool = False


def _check_schema(schema: dict[str, Any] | None) -> None:
    if schema is None:
        return
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from None


class IsJsonGrader(_Strict):
    type: Literal["is_json"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _valid_schema(self) -> IsJsonGrader:
        _check_schema(self.schema_)
        return self


class ContainsJsonGrader(_Strict):
    type: Literal["contains_json"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _valid_schema(self) -> ContainsJsonGrader:
        _check_schema(self.schema_)
        return self


class LevenshteinGrader(_ValueOrField):
    type: Literal["levenshtein"]
    value: str | None = None
    field: str | None = None
    max_distance: int = Field(default=5, ge=0)


class LatencyGrader(_Strict):
    type: Literal["latency"]
    max_ms: float = Field(gt=0)


class CostGrader(_Strict):
    type: Literal["cost"]
    max_usd: float = Field(ge=0)


class ClosedQaGrader(_ValueOrField):
    type: Literal["closed_qa"]
    value: str | None = Field(default=None, min_length=1)
    field: str | None = None
    model: str | None = None


class FactualityGrader(_Strict):
    type: Literal["factuality"]
    field: str = "expected"
    model: str | None = None


# promptfoo assertions graded by the judge model.
PROMPTFOO_JUDGED = frozenset({"llm-rubric", "model-graded-closedqa", "factuality", "model-graded-factuality"})


class PromptfooAssertionGrader(_Strict):
    """One promptfoo assertion slot (a promptfoo suite's graders): each row's `field` holds its test's
    value and threshold for it; a row without that field is not judged by it."""

    type: Literal["promptfoo_assertion"]
    assertion: str = Field(min_length=1)
    field: str = Field(min_length=1)

    @property
    def embedding_model(self) -> str | None:
        """The embedding model `similar` calls (None for other assertions)."""
        similar = self.assertion.removeprefix("not-") in {"similar", "similar:cosine"}
        return DEFAULT_EMBEDDING_MODEL if similar else None


class NotGrader(_Strict):
    """Passes when `grader` fails (promptfoo's `not-` forms)."""

    type: Literal["not"]
    grader: GraderSpec


GraderSpec = Annotated[
    EqualsGrader
    | ContainsGrader
    | StartsWithGrader
    | FuzzyMatchGrader
    | RegexGrader
    | JsonSchemaGrader
    | RubricGrader
    | SimilarityGrader
    | HallucinationGrader
    | ContainsAnyGrader
    | ContainsAllGrader
    | IsJsonGrader
    | ContainsJsonGrader
    | LevenshteinGrader
    | LatencyGrader
    | CostGrader
    | ClosedQaGrader
    | FactualityGrader
    | PromptfooAssertionGrader
    | NotGrader,
    Field(discriminator="type"),
]
NotGrader.model_rebuild()


def unwrapped(grader: GraderSpec) -> GraderSpec:
    """The grader a `not` grader inverts (itself for any other)."""
    while isinstance(grader, NotGrader):
        grader = grader.grader
    return grader


def uses_judge(grader: GraderSpec) -> bool:
    """Whether the grader calls a judge model (its own `model:`, else the config's `judge`)."""
    inner = unwrapped(grader)
    if isinstance(inner, PromptfooAssertionGrader):
        return inner.assertion.removeprefix("not-") in PROMPTFOO_JUDGED
    return isinstance(inner, RubricGrader | ClosedQaGrader | FactualityGrader) or (
        isinstance(inner, HallucinationGrader) and inner.method == "judge"
    )


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


class Lineage(_Strict):
    """Where each row of a suite's dataset comes from (`evalbot lineage`); a gate when `required`."""

    # The row field naming the row's origin (a ticket, a log export, "synthetic"...).
    source_field: str = Field(default="source", min_length=1)
    # Rows without a non-empty `source_field` fail `evalbot/evals` (else they are only listed).
    required: bool = False


class Adversarial(_Strict):
    """Attacks on a suite's prompts, base and head (bot.pipeline.adversarial): a gate per attack family."""

    # The version of evalbot's attack library (bot/pipeline/attacks/v<N>.yaml).
    library: str = "v1"
    # The library's families to run; None: every one.
    families: list[str] | None = Field(default=None, min_length=1)
    # The row fields the attacks' text goes into (in turn, one per attack and row).
    fields: list[str] = Field(default_factory=list)
    # Rows of the dataset attacked (a seeded sample, the same every run): each gets every attack.
    sample: int = Field(default=10, ge=0, le=500)
    seed: int = 0
    # The suite's own attack rows (a dataset file: the prompt's fields, `family` and a success test).
    rows: str | None = None
    # How far a family's success rate may rise (head − base, percentage points) before the gate asks
    # whether the rise is significant.
    max_increase_pp: float = Field(default=0.0, ge=0, le=100)

    @field_validator("rows")
    @classmethod
    def _rows_inside_the_repository(cls, path: str | None) -> str | None:
        problem = None if path is None else path_problem(path)
        if problem is not None:
            raise ValueError(f"must be a path inside the repository, like evals/attacks.jsonl: {problem}")
        return path

    @model_validator(mode="after")
    def _runnable(self) -> Adversarial:
        try:
            library = load_library(self.library)
        except InputError as exc:
            raise ValueError(exc.message) from None
        unknown = [f for f in self.families or [] if f not in library.families]
        if unknown:
            raise ValueError(
                f"library {self.library} has no family {', '.join(unknown)} (it has {', '.join(library.families)})"
            )
        if self.sample and not self.fields:
            raise ValueError("`fields` names the row fields the attacks go into (or set `sample: 0` and `rows`)")
        if not self.sample and self.rows is None:
            raise ValueError("nothing to attack with: `sample: 0` and no `rows`")
        return self


class Feedback(_Strict):
    """Production feedback (`POST /api/feedback`) and when confirmed feedback is proposed to the suites'
    datasets by a pull request the app opens (bot/github/flows/feedback.py). Read from the default branch."""

    # When the app opens its pull request of confirmed feedback not yet merged (UTC cron); None: never
    # (teams that merge by hand use `evalbot feedback export`).
    merge: Schedule | None = None


class Counterfactual(_Strict):
    """Counterfactual probes: each probed case rendered once per value of `field` (bot.pipeline.fairness)."""

    # The row field the prompt reads that names the person (guest_name, pronoun, language...).
    field: str = Field(min_length=1)
    values: list[str] = Field(min_length=2)
    # Cases probed at most (the same ones, chosen by their ids, at base and head): each costs one call
    # per value on each side.
    max_cases: int = Field(default=100, ge=1, le=5000)

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("counterfactual values must be distinct")
        return values


class Fairness(_Strict):
    """A suite's fairness gate (bot.pipeline.fairness): accuracy per group, and counterfactual probes."""

    # The row field whose values are the groups (guest tier, language, region).
    group_field: str | None = Field(default=None, min_length=1)
    # The most the gap between the best and the worst group's accuracy may widen, in percentage points.
    max_gap_increase_pp: float = Field(default=5.0, ge=0)
    counterfactual: Counterfactual | None = None
    # The largest share of probed cases whose graded outcome may differ between the values.
    max_flip_rate: float = Field(default=0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _something_to_judge(self) -> Fairness:
        if self.group_field is None and self.counterfactual is None:
            raise ValueError("fairness takes `group_field`, `counterfactual` or both")
        return self


class PolicyRule(_Strict):
    """One rule of `policies:`, checked on every affected prompt, base and head (bot.pipeline.policies)."""

    name: str = Field(min_length=1)
    # A pattern (the `regex` module) the prompt's text must not contain / must contain.
    must_not_match: str | None = None
    must_match: str | None = None
    # The most characters the prompt's messages may have together.
    max_chars: int | None = Field(default=None, ge=1)
    # Personal data (e-mails, phone numbers, Luhn-valid cards, mod-97-valid IBANs) in prompts and datasets.
    pii: bool = False
    # A yes/no question the base's judge answers about the prompt, quoting it as evidence.
    question: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_rule(self) -> PolicyRule:
        set_keys = [k for k in ("must_not_match", "must_match", "max_chars", "question") if getattr(self, k)]
        if len(set_keys) + self.pii != 1:
            raise ValueError(
                "a policy takes exactly one of must_not_match, must_match, max_chars, pii: true or question"
            )
        for key in ("must_not_match", "must_match"):
            pattern = getattr(self, key)
            if pattern is not None:
                try:
                    regex.compile(pattern)
                except regex.error as exc:
                    raise ValueError(f"{key} is not a regular expression: {exc}") from None
        return self


# The fields of a suite that define its exam (DESIGN.md §6, trust model). `latency_sample` sets how
# many pairs decide latency: a head that shrank it would make the latency gate undecidable.
EXAM_FIELDS = frozenset(
    {
        "graders",
        "repeats",
        "schema_",
        "training_data",
        "data_gates",
        "expected_field",
        "latency_sample",
        "lineage",
        "adversarial",
        "fairness",
    }
)
# Graders whose `field:` is the reference answer: left unset, it is the suite's `expected_field`.
REFERENCE_GRADERS = ("equals", "contains", "similarity", "starts_with", "fuzzy_match", "rubric")


class PromptParams(_Strict):
    """Call parameters for a prompt file that carries none (plain text) or a suite with no prompt file."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)


class Suite(_Strict):
    name: str = Field(min_length=1)
    # evalbot's prompt YAML, a .prompty file, a LangChain prompt (YAML/JSON) or a plain .txt/.md/.j2 file.
    # None: each row's `input` (a chat list or a text) is the request, as in OpenAI-evals samples.
    prompt: str | None = None
    dataset: str | None = None
    # The prompt, rows and graders come from this promptfoo config, read in place.
    promptfoo: str | None = None
    # How a plain-text prompt (or a prompt file that does not say) writes its variables.
    template_format: TemplateFormat | None = None
    # The row field holding the reference answer (`ideal`, `label`, ...): graders comparing with a
    # reference and leaving `field:` unset use it. None: `expected`.
    expected_field: str | None = Field(default=None, min_length=1)
    # Files the app loads besides the prompt (a retrieval config, a tool schema, the code that builds
    # the prompt): a change to any of them makes the suite affected.
    watch: list[str] = Field(default_factory=list)
    # The prompt reads no row field on purpose (every row sends the same request).
    static: bool = False
    # The model, for a plain-text prompt or a suite without a prompt file; overrides a Prompty file's.
    model: str | None = Field(default=None, min_length=1)
    params: PromptParams = Field(default_factory=PromptParams)
    # The row field holding each case's id (a missing or repeated one is an input error). Unset: rows'
    # `id`, else a hash of the row. It names cases, so it is the head's, like `dataset`.
    id_field: str | None = Field(default=None, min_length=1)
    schema_: str | None = Field(default=None, alias="schema")
    models: list[str] = Field(default_factory=list)
    repeats: int = Field(default=1, ge=1, le=20)
    # Cases whose base and head latencies are measured again, back to back, when answers came from the
    # cache (docs/gate.md): each costs two calls.
    latency_sample: int = Field(default=30, ge=1, le=1000)
    graders: list[GraderSpec] = Field(default_factory=list)
    training_data: str | None = None
    data_gates: DataGates = Field(default_factory=DataGates)
    lineage: Lineage | None = None
    # Attacks on the prompt, base and head, gated per family (policy: the base's, with the exam).
    adversarial: Adversarial | None = None
    fairness: Fairness | None = None

    @field_validator("prompt", "dataset", "schema_", "training_data", "promptfoo")
    @classmethod
    def _inside_the_repository(cls, path: str | None) -> str | None:
        problem = None if path is None else path_problem(path)
        if problem is not None:
            raise ValueError(f"must be a path inside the repository, like evals/cases.jsonl: {problem}")
        return path

    @field_validator("watch")
    @classmethod
    def _watched_inside_the_repository(cls, paths: list[str]) -> list[str]:
        for path in paths:
            problem = path_problem(path)
            if problem is not None:
                raise ValueError(f"{path!r} must be a path inside the repository, like app/tools.py: {problem}")
        return paths

    @model_validator(mode="after")
    def _what_to_run(self) -> Suite:
        if self.promptfoo is not None:
            given = [key for key in ("prompt", "dataset", "model") if getattr(self, key) is not None]
            if given:
                raise ValueError(
                    f"a promptfoo suite takes its prompts, tests and providers from that file: drop {given[0]}"
                )
        elif self.dataset is None:
            raise ValueError("a suite needs `dataset` (or `promptfoo`)")
        elif self.prompt is None and self.model is None:
            raise ValueError("a suite without `prompt` sends each row's `input` as it is, and needs `model`")
        return self

    @property
    def kind(self) -> str:
        """Which reader turns this suite's files into a prompt and rows (`bot.pipeline.suites.READERS`)."""
        return "promptfoo" if self.promptfoo is not None else "files"

    def paths(self) -> list[str]:
        """The repository files this suite is made of (a reader may read more, e.g. promptfoo's `file://`)."""
        named = (self.prompt, self.dataset, self.schema_, self.training_data, self.promptfoo, *self.watch)
        return list(dict.fromkeys(p for p in named if p))

    def with_exam_of(self, other: Suite) -> Suite:
        """This suite's prompt and dataset, graded as `other` grades."""
        return self.model_copy(update={name: getattr(other, name) for name in EXAM_FIELDS})

    def reference_graders(self) -> list[GraderSpec]:
        """`graders:` with each reference grader's unset `field:` set to `expected_field`."""
        if self.expected_field is None:
            return list(self.graders)
        return [
            g.model_copy(update={"field": self.expected_field})
            if g.type in REFERENCE_GRADERS and "field" not in g.model_fields_set
            else g
            for g in self.graders
        ]


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
    # Policy review of every affected prompt (and PII in datasets): bot.pipeline.policies.
    policies: list[PolicyRule] = Field(default_factory=list)
    # Production feedback into the suites' datasets: None refuses `POST /api/feedback` for the repository.
    feedback: Feedback | None = None
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
        policies = [policy.name for policy in self.policies]
        repeated = sorted({name for name in policies if policies.count(name) > 1})
        if repeated:
            raise ValueError(f"policy names must be unique; repeated: {', '.join(repeated)}")
        return self

    def suite(self, name: str) -> Suite | None:
        return next((suite for suite in self.suites if suite.name == name), None)

    def counterpart(self, suite: Suite) -> Suite | None:
        """This config's version of another revision's `suite`: by name, else (a rename) by dataset, else
        by prompt path, so a renamed suite keeps its exam and data gates."""
        for key in ("name", "dataset", "prompt", "promptfoo"):
            if getattr(suite, key) is None:
                continue
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
