"""Stage 1-3: load the config at both revisions, find the affected suites, and validate their files."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import InputError, InputErrors, Problem, UnknownSuiteError, sorted_errors, unpack
from bot.pipeline.config import (
    CONFIG_PATH,
    Config,
    GraderSpec,
    HallucinationGrader,
    Limits,
    PromptfooAssertionGrader,
    Suite,
    model_refusal,
    policy_values,
    unwrapped,
    uses_judge,
)
from bot.pipeline.datasets import Case, Dataset, id_field_candidates
from bot.pipeline.files import read_config
from bot.pipeline.prompts import Messages, Prompt, semver_key
from bot.pipeline.source import Source
from bot.pipeline.suites import Rendered, fields_used, read_suite, render_cases, request_key


@dataclass(frozen=True)
class SuitePlan:
    """One suite to evaluate: the base and head prompt on the head's golden cases (and the base's
    cases the change removes), graded by the base's exam."""

    # The head's suite (prompt, dataset, models) with the base's exam (graders, repeats, schema, data gates).
    suite: Suite
    head_prompt: Prompt
    base_prompt: Prompt | None
    # The head's dataset, as the pull request leaves it.
    dataset: Dataset
    reasons: tuple[str, ...]
    # Rows of the base's dataset that the change removes: still evaluated, in their base version.
    removed: tuple[Case, ...] = ()
    # The dataset as the base has it (for the data checks' diff), when it exists and parses.
    base_dataset: Dataset | None = None
    # The head's own exam, when it differs from the base's: run beside it, never gating.
    head_exam: Suite | None = None
    definition_changes: tuple[str, ...] = ()
    # The revision the exam's files (schema) are read from: the base's when the suite exists there.
    exam_ref: str = ""
    # What each prompt sends for each case it can render (by case id), rendered once when planned.
    head_requests: Mapping[str, Messages] = field(default_factory=dict)
    base_requests: Mapping[str, Messages] = field(default_factory=dict)
    # Cases whose requests are those of an earlier case (case id → that case's id): one sample, not two.
    same_request: Mapping[str, str] = field(default_factory=dict)
    # What the head's files ask for that evalbot does not run (a reader's notes, each with file and line).
    not_run: tuple[str, ...] = ()

    @property
    def cases(self) -> tuple[Case, ...]:
        """Every case of the suite: the head's rows, then the removed base rows."""
        return self.dataset.cases + self.removed

    @property
    def evaluated_cases(self) -> tuple[Case, ...]:
        """The cases sent to the models: each distinct request once."""
        return tuple(case for case in self.cases if case.id not in self.same_request)

    def requests(self, prompt: Prompt) -> Mapping[str, Messages]:
        """What `prompt` (the head's or the base's) sends per case id; a case it cannot render has none."""
        return self.head_requests if prompt is self.head_prompt else self.base_requests

    def definition_hash(self, judge: str) -> str:
        """sha256 of what the suite's scores mean: its `.evalbot.yml` entry, the judge and the dataset's
        rows. Two runs with the same hash took the same exam."""
        entry = self.suite.model_dump(mode="json", by_alias=True)
        rows = [case.fields for case in self.dataset.cases]
        canonical = json.dumps({"suite": entry, "judge": judge, "rows": rows}, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def current_model(self) -> str:
        """The suite's current model: the base prompt's, else the head's (a new suite)."""
        return (self.base_prompt or self.head_prompt).model

    def other_models(self, requested: list[str]) -> list[str]:
        """Models to run the head prompt on besides its own: the current one when the change switches
        models (old vs new, same prompt), the suite's `models:` and those requested for this run."""
        head_model = self.head_prompt.model
        candidates = list(dict.fromkeys([self.current_model, *self.suite.models, *requested]))
        if candidates == [head_model]:
            return []  # one model only: the base/head comparison says it all
        return [m for m in candidates if m != head_model]

    def variants(self, requested: list[str]) -> list[tuple[str, Prompt, str]]:
        """Every (name, prompt, model) to evaluate: the head, the head prompt on each other model, the base."""
        found = [("head", self.head_prompt, self.head_prompt.model)]
        found += [(model, self.head_prompt, model) for model in self.other_models(requested)]
        if self.base_prompt is not None:
            found.append(("base", self.base_prompt, self.base_prompt.model))
        return found


@dataclass(frozen=True)
class PolicyChange:
    """One policy key of `.evalbot.yml` the change sets differently: values as compact JSON."""

    key: str
    base: str
    head: str


def policy_changes(origin: Config | None, head: Config | None) -> list[PolicyChange]:
    """The policy keys `head` sets differently from `origin` (a missing file has the defaults)."""
    before, after = policy_values(origin), policy_values(head)
    return [
        PolicyChange(key, _compact(before[key]), _compact(after[key])) for key in before if before[key] != after[key]
    ]


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


@dataclass
class Plan:
    """What to evaluate, and what is wrong before any model is called."""

    config: Config
    changed_paths: list[str]
    head: str = ""
    # The head's judge, for running the head's own exam beside the base's.
    head_judge: str = ""
    # The base's config: policy such as each suite's data gates comes from it.
    base_config: Config | None = None
    suites: list[SuitePlan] = field(default_factory=list)
    # Input that cannot be read or run (CLI exit 2); nothing is evaluated while there is any.
    errors: list[InputError] = field(default_factory=list)
    # Rules broken by readable input, such as a prompt changed without a version bump: the gate fails.
    # A `Problem` names its file and line where it has one (a check-run annotation on GitHub).
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The base's `.evalbot.yml` exists but cannot be read: no policy, so nothing is evaluated and the gate fails.
    policy_error: str | None = None
    # Policy keys the change sets differently from the merge base: an AI change a base approver must approve.
    policy_changes: list[PolicyChange] = field(default_factory=list)


async def plan(
    source: Source,
    base: str,
    head: str,
    only: list[str] | None = None,
    run_all: bool = False,
    models: list[str] | None = None,
) -> Plan:
    """Find and validate what a change between `base` and `head` asks to evaluate.

    Args:
        source: the repository.
        base: the revision policy and the "before" prompts come from.
        head: the revision suites, datasets and the "after" prompts come from.
        only: suite names to evaluate even if they did not change (changed suites are evaluated anyway).
        run_all: evaluate every suite whether or not it changed.
        models: models requested for this run besides the suites' own (`--models`).

    Raises:
        InputError: when the head's `.evalbot.yml` cannot be read, `only` names an unknown suite, or
            `models` names one the base's `allowed_models` refuses.
    """
    warnings: list[str] = []
    head_config = await read_config(source, head)
    if head_config is None:
        warnings.append(f"no {CONFIG_PATH} at the head revision: no suites to evaluate")
        head_config = Config()
    changed = await source.changed_paths(base, head) if base != head else []
    try:
        base_config = await read_config(source, base)
    except InputError as exc:
        # Fail closed: a default policy would let the pull request pick its own gate by breaking the base's.
        error = f"the base branch's {CONFIG_PATH} cannot be read: {exc}; evalbot will not apply a default policy"
        return Plan(config=Config(), changed_paths=changed, head=head, warnings=warnings, policy_error=error)
    if base_config is None and base != head:
        # First adoption: the repository has no policy yet, so there is nothing a pull request could loosen.
        warnings.append(f"the base revision has no {CONFIG_PATH}: the default policy and each suite's own exam apply")
    # What this change did is measured from where it started: a base that moved on since (a `prices:` edit
    # on main) must not make an unrelated pull request look like a policy or suite change.
    origin_config = await _origin_config(source, base, head, base_config)
    config = head_config.with_policy_of(base_config or Config())
    result = Plan(
        config=config,
        changed_paths=changed,
        head=head,
        head_judge=head_config.judge,
        base_config=base_config,
        warnings=warnings,
    )
    if base != head and (origin_config is not None or base_config is not None):
        result.policy_changes = policy_changes(origin_config, head_config)

    unknown = [name for name in only or [] if config.suite(name) is None]
    if unknown:
        known = ", ".join(s.name for s in config.suites) or "none"
        raise UnknownSuiteError(f"unknown suite {', '.join(map(repr, unknown))} (suites: {known})", CONFIG_PATH)
    for model in models or []:
        reason = model_refusal(model, config.allowed_models)
        if reason is not None:
            raise InputError(f"--models: model {model!r} is not allowed: {reason}")

    for suite in config.suites:
        reasons = _reasons(suite, origin_config, head_config, changed)
        if not reasons and suite.kind != "files":
            # A reader that follows references (promptfoo's `file://`) knows its files once it has read them.
            discovered = await read_suite(source, head, suite, config.limits)
            reasons = [f"{path} changed" for path in discovered.files if path in changed]
        # Naming suites adds to what changed, never hides it: a partial run must not pass the gate
        # for a suite it left out.
        if only and suite.name in only and not reasons:
            reasons = ["named on the command line"]
        elif run_all and not reasons:
            reasons = ["all suites requested"]
        if not reasons:
            continue
        base_suite = base_config.counterpart(suite) if base_config is not None and base != head else None
        try:
            suite_plan = await _load_suite(source, base, head, suite, base_suite, tuple(reasons), config.limits)
        except InputError as exc:
            # Every problem of the suite's files; the other suites are still validated.
            result.errors += unpack(exc)
            continue
        if base_suite is not None:
            changes = _definition_changes(base_suite, suite, config.judge, head_config.judge, changed)
            if changes:
                suite_plan = dataclasses.replace(suite_plan, head_exam=suite, definition_changes=tuple(changes))
        allowed, refused = _apply_model_policy(suite_plan, suite, config, head_config, base_config)
        if refused:
            result.errors += refused
            continue
        if suite_plan.base_prompt is not None and allowed.base_prompt is None:
            result.warnings.append(
                f"{suite_plan.base_prompt.path}: the base's model {suite_plan.base_prompt.model!r} is not allowed "
                "by the base's policy: the head is evaluated alone"
            )
        suite_plan = allowed
        result.suites.append(suite_plan)
        result.warnings += suite_plan.head_prompt.warnings
        result.warnings += [*suite_plan.not_run, *_id_warnings(suite_plan)]
        result.warnings += _unused_fields(suite_plan) + _same_request_warnings(suite_plan)
        result.problems += _version_problems(suite_plan) + _unrunnable_removed(suite_plan)
    if origin_config is not None and base != head:
        for gone in origin_config.suites:
            if config.suite(gone.name) is None:
                result.problems.append(
                    f"suite {gone.name} of the base's {CONFIG_PATH} is gone in this change: removing or renaming "
                    "a suite takes its files out of the gate, so it needs a lead's approval with a reason"
                )
    result.errors = sorted_errors(result.errors)
    return result


async def _origin_config(source: Source, base: str, head: str, base_config: Config | None) -> Config | None:
    """`.evalbot.yml` where the head's changes start (the merge base); the base's when that is the base,
    or when the merge base's file cannot be read (the stricter comparison)."""
    if base == head:
        return base_config
    origin = await source.merge_base(base, head)
    if origin == base:
        return base_config
    try:
        return await read_config(source, origin)
    except InputError:
        return base_config


def gate_certain_to_fail(the_plan: Plan) -> list[str]:
    """What makes `evalbot/evals` fail whatever the models answer (`evalbot validate` exits 1 for it)."""
    if not the_plan.config.suites:
        return [f"{CONFIG_PATH} has no suite: there is nothing to evaluate, so nothing can pass"]
    reasons = []
    min_cases = the_plan.config.thresholds.min_cases
    for sp in the_plan.suites:
        name = sp.suite.name
        # Every grader but hallucination's feeds accuracy.
        if all(isinstance(grader, HallucinationGrader) for grader in sp.suite.graders):
            reasons.append(
                f"suite {name} has no accuracy grader ({', '.join(g.type for g in sp.suite.graders) or 'none'}): "
                "its accuracy cannot be measured, so its gate cannot pass"
            )
        cases = len(sp.evaluated_cases)
        if cases < min_cases:
            merged = f" ({len(sp.cases)} rows, identical requests counted once)" if cases != len(sp.cases) else ""
            reasons.append(
                f"suite {name} has {cases} cases{merged}, fewer than `thresholds.min_cases` ({min_cases}): "
                "too few to decide anything, so its gate cannot pass"
            )
    return reasons


def _reasons(suite: Suite, base_config: Config | None, head_config: Config, changed: list[str]) -> list[str]:
    watched = set(suite.watch) - {suite.prompt, suite.dataset}
    reasons = [
        f"{path} changed" + (" (watched)" if path in watched else "") for path in suite.paths() if path in changed
    ]
    base_suite = base_config.counterpart(suite) if base_config else None
    if base_suite is None:
        reasons.append("new suite")
    elif base_suite != suite:
        reasons.append(f"its entry in {CONFIG_PATH} changed")
    elif base_config is not None and (base_config.judge, base_config.prices) != (head_config.judge, head_config.prices):
        reasons.append(f"judge or prices in {CONFIG_PATH} changed")
    return reasons


async def _load_suite(
    source: Source,
    base: str,
    head: str,
    suite: Suite,
    base_suite: Suite | None,
    reasons: tuple[str, ...],
    limits: Limits,
) -> SuitePlan:
    # Every file is read whatever the others hold: one bad file must not hide another's problems.
    head_input = await read_suite(source, head, suite, limits)
    head_prompt, dataset = head_input.prompt, head_input.dataset
    if head_input.errors or head_prompt is None or dataset is None:
        raise InputErrors(list(head_input.errors) or [InputError(f"suite {suite.name!r} cannot be read")])
    base_input = None
    if base != head:
        # The head's id_field names the base's rows too, so that cases pair up. A broken base file is
        # what a pull request may be fixing: what cannot be read there is left out.
        base_input = await read_suite(
            source, base, (base_suite or suite).model_copy(update={"id_field": suite.id_field}), limits
        )
    base_prompt = base_input.prompt if base_input is not None else None
    base_dataset = base_input.dataset if base_input is not None else None
    if head_input.graders is not None:
        suite = suite.model_copy(update={"graders": list(head_input.graders)})
    if head_input.models:
        suite = suite.model_copy(update={"models": list(dict.fromkeys([*suite.models, *head_input.models]))})
    if base_suite is not None and base_input is not None and base_input.graders is not None:
        base_suite = base_suite.model_copy(update={"graders": list(base_input.graders)})
    removed: tuple[Case, ...] = ()
    if base_suite is not None and base_dataset is not None:
        kept = {case.id for case in dataset.cases}
        removed = tuple(c for c in base_dataset.cases if c.id not in kept)
    cases = dataset.cases + removed

    async def render(prompt: Prompt, which: str) -> Rendered:
        rows = await asyncio.to_thread(render_cases, prompt, dataset.cases, dataset.path, which)
        # Removed base rows a prompt cannot render are a plan problem (`_unrunnable_removed`), not an input error.
        gone = await asyncio.to_thread(render_cases, prompt, removed, dataset.path, which)
        return Rendered({**rows.requests, **gone.requests}, rows.errors)

    head_rendered = await render(head_prompt, "head " if base_prompt is not None else "")
    base_rendered = await render(base_prompt, "base ") if base_prompt is not None else Rendered()
    errors = head_rendered.errors + base_rendered.errors
    errors += _static_errors(suite, head_prompt, dataset)
    if errors:
        raise InputErrors(errors)
    exam_suite = suite.with_exam_of(base_suite) if base_suite is not None else suite
    return SuitePlan(
        # The base grades a suite it knows: a pull request cannot set its own exam.
        suite=exam_suite.model_copy(update={"graders": exam_suite.reference_graders()}),
        head_prompt=head_prompt,
        base_prompt=base_prompt,
        dataset=dataset,
        reasons=reasons,
        removed=removed,
        base_dataset=base_dataset,
        exam_ref=base if base_suite is not None else head,
        head_requests=head_rendered.requests,
        base_requests=base_rendered.requests,
        same_request=_same_requests(cases, head_rendered.requests, base_rendered.requests if base_prompt else None),
        not_run=head_input.not_run,
    )


def _static_errors(suite: Suite, prompt: Prompt, dataset: Dataset) -> list[InputError]:
    """A prompt that reads no row field sends one request, whatever the rows: unless the suite says it is
    static, that is a mistake (a `{{var}}` written for another template format, say)."""
    if suite.static or len(dataset.cases) < 2:
        return []
    fields = {name for case in dataset.cases for name in case.fields}
    if set(prompt.variables) & fields:
        return []
    uses = ", ".join(prompt.variables) or "no variable"
    message = (
        f"the prompt uses {uses} and no field of the rows ({', '.join(sorted(fields)[:12])}), so all "
        f"{len(dataset.cases)} rows would send the same request: write the fields as its template format "
        "does, or set `static: true` on the suite if that is meant"
    )
    return [InputError(message, prompt.path)]


def _same_requests(
    cases: tuple[Case, ...], head: Mapping[str, Messages], base: Mapping[str, Messages] | None
) -> dict[str, str]:
    """Each case whose requests (head's and base's) equal an earlier case's, mapped to that case."""
    first: dict[str, str] = {}
    same = {}
    for case in cases:
        if case.id not in head:
            continue
        key = request_key(head[case.id], None if base is None else base.get(case.id))
        if key in first:
            same[case.id] = first[key]
        else:
            first[key] = case.id
    return same


def _unrunnable_removed(suite_plan: SuitePlan) -> list[str]:
    """Removed rows a prompt cannot render: they cannot be evaluated, so the gate fails."""
    problems = []
    for case in suite_plan.removed:
        for prompt in filter(None, (suite_plan.head_prompt, suite_plan.base_prompt)):
            if case.id not in suite_plan.requests(prompt):
                problems.append(
                    f"row {case.id!r} that this change removes from {suite_plan.dataset.path} cannot be rendered "
                    f"by {prompt.path}: it cannot be evaluated, so removing it needs a lead's approval with a reason"
                )
                break
    return problems


def _uses_judge(graders: list[GraderSpec]) -> bool:
    """Whether a grader falls back on the config's `judge` (a judge-graded grader with no `model:`)."""
    return any(uses_judge(g) and getattr(unwrapped(g), "model", None) is None for g in graders)


def _describe(grader: GraderSpec) -> str:
    settings = grader.model_dump(by_alias=True, exclude_defaults=True, exclude={"type"})
    return f"{grader.type} ({', '.join(f'{k}: {v!r}' for k, v in settings.items())})" if settings else grader.type


def _definition_changes(base: Suite, head: Suite, base_judge: str, head_judge: str, changed: list[str]) -> list[str]:
    """What the head changes in a suite's exam, one line each, for "Evaluation definition changed"."""
    changes = []
    if base.name != head.name:
        changes.append(f"suite renamed from {base.name} to {head.name}")
    by_type: dict[str, tuple[list[GraderSpec], list[GraderSpec]]] = defaultdict(lambda: ([], []))
    for side, graders in enumerate((base.graders, head.graders)):
        for grader in graders:
            by_type[grader.type][side].append(grader)
    for before_list, after_list in by_type.values():
        for i in range(max(len(before_list), len(after_list))):
            before = before_list[i] if i < len(before_list) else None
            after = after_list[i] if i < len(after_list) else None
            if before is None and after is not None:
                changes.append(f"grader added: {_describe(after)}")
            elif after is None and before is not None:
                changes.append(f"grader removed: {_describe(before)}")
            elif before != after and before is not None and after is not None:
                changes.append(f"grader changed: {_describe(before)} → {_describe(after)}")
    if base.repeats != head.repeats:
        changes.append(f"repeats: {base.repeats} → {head.repeats}")
    if base.schema_ != head.schema_:
        changes.append(f"schema: {base.schema_ or 'none'} → {head.schema_ or 'none'}")
    elif base.schema_ is not None and base.schema_ in changed:
        # The base's exam reads the schema as the base has it: the head's edit is a new exam.
        changes.append(f"schema file {base.schema_} changed")
    if base.training_data != head.training_data:
        changes.append(f"training data: {base.training_data or 'none'} → {head.training_data or 'none'}")
    if base.lineage != head.lineage:
        was, now = (suite.lineage.model_dump() if suite.lineage else "none" for suite in (base, head))
        changes.append(f"lineage: {was} → {now}")
    if base.adversarial != head.adversarial:
        was, now = (suite.adversarial.model_dump() if suite.adversarial else "none" for suite in (base, head))
        changes.append(f"adversarial: {was} → {now}")
    if base.fairness != head.fairness:
        was, now = (suite.fairness.model_dump() if suite.fairness else "none" for suite in (base, head))
        changes.append(f"fairness: {was} → {now}")
    gates: dict[str, Any] = base.data_gates.model_dump(by_alias=True)
    for key, value in head.data_gates.model_dump(by_alias=True).items():
        if gates[key] != value:
            changes.append(f"data gate {key}: {gates[key]} → {value}")
    if base_judge != head_judge and (_uses_judge(base.graders) or _uses_judge(head.graders)):
        changes.append(f"judge: {base_judge} → {head_judge}")
    return changes


def _unused_fields(suite_plan: SuitePlan) -> list[str]:
    """Row fields that neither prompt nor any grader reads: often a reference answer under a name no
    grader looks at (`ideal`, `label`), which would leave the answers ungraded."""
    prompts = [p for p in (suite_plan.head_prompt, suite_plan.base_prompt) if p is not None]
    used = fields_used([name for p in prompts for name in p.variables], suite_plan.suite.graders)
    used |= {suite_plan.dataset.id_field, "category", *(name for p in prompts for name in p.defaults)}
    fields = dict.fromkeys(name for case in suite_plan.dataset.cases for name in case.fields)
    unused = [name for name in fields if name not in used]
    if not unused:
        return []
    return [
        f"{suite_plan.dataset.path}: fields no prompt or grader of suite {suite_plan.suite.name} reads: "
        f"{', '.join(unused)}"
    ]


def _same_request_warnings(suite_plan: SuitePlan) -> list[str]:
    if not suite_plan.same_request:
        return []
    pairs = [f"{case} = {first}" for case, first in list(suite_plan.same_request.items())[:10]]
    more = len(suite_plan.same_request) - len(pairs)
    return [
        f"{suite_plan.dataset.path}: {len(suite_plan.same_request)} rows send the same request as an earlier row "
        f"({', '.join(pairs)}{f', and {more} more' if more else ''}): each request is evaluated and counted once"
    ]


def _id_warnings(suite_plan: SuitePlan) -> list[str]:
    dataset = suite_plan.dataset
    if not dataset.hashed_ids:
        return []
    candidates = id_field_candidates([case.fields for case in dataset.cases])
    hint = f" (id_field: {candidates[0]} would do)" if candidates else ""
    return [
        f"{dataset.path}: {dataset.hashed_ids} of {len(dataset.cases)} rows have no id field, so the report names "
        f"their cases by a hash of the row; set id_field on suite {suite_plan.suite.name} to the field that "
        f"holds your case ids{hint}"
    ]


def _apply_model_policy(
    suite_plan: SuitePlan, head_suite: Suite, config: Config, head_config: Config, base_config: Config | None
) -> tuple[SuitePlan, list[InputError]]:
    """The suite plan without a base prompt whose model the policy refuses, and an InputError for every
    other model string of the suite that it refuses, at its file and line (made before any call).

    Both exams are checked: the base's, which grades, and the head's own (`head_suite`), which is run
    beside it when it differs."""
    allowed = config.allowed_models
    base_prompt = suite_plan.base_prompt
    if base_prompt is not None and model_refusal(base_prompt.model, allowed) is not None:
        # What the base calls is what a pull request may be moving away from: evaluate the head alone.
        suite_plan = dataclasses.replace(suite_plan, base_prompt=None)
    suite = head_suite
    index = head_config.suites.index(suite) if suite in head_config.suites else None
    at: list[str | int] = ["suites", index] if index is not None else []
    head_prompt = suite_plan.head_prompt
    found: list[tuple[str, str, int | None]] = [(head_prompt.model, head_prompt.path, head_prompt.model_line)]
    if suite.model is not None:
        # The suite's `model:` is what the prompt is sent to: name its line in .evalbot.yml.
        found = [(suite.model, CONFIG_PATH, head_config.line([*at, "model"]))]
    found += [(m, CONFIG_PATH, head_config.line([*at, "models", i])) for i, m in enumerate(suite.models)]
    # Models the suite's files name besides (promptfoo's other providers), at those files.
    found += [(m, head_prompt.path, None) for m in suite_plan.suite.models if m not in suite.models]
    base_judge = (config.judge, base_config.line(["judge"]) if base_config else None)
    # (grader, the judge it falls back on with its line, the line of its own `model:`)
    # The exam's graders, when it differs from the head's own, or when the suite's files define them
    # (promptfoo's assertions, whose judge and embedding models are the base's).
    graders: list[tuple[GraderSpec, tuple[str, int | None], int | None]] = [
        (grader, base_judge, None)
        for grader in suite_plan.suite.graders
        if suite_plan.head_exam is not None or isinstance(grader, PromptfooAssertionGrader)
    ]
    head_judge = (head_config.judge, head_config.line(["judge"])) if suite_plan.head_exam is not None else base_judge
    graders += [(g, head_judge, head_config.line([*at, "graders", i, "model"])) for i, g in enumerate(suite.graders)]
    for grader, (judge, judge_line), line in graders:
        inner = unwrapped(grader)
        model = inner.embedding_model if isinstance(inner, PromptfooAssertionGrader) else getattr(inner, "model", None)
        if model is not None:
            found.append((model, CONFIG_PATH, line))
        elif uses_judge(grader):
            found.append((judge, CONFIG_PATH, judge_line))
    errors = []
    for model, path, line in found:
        reason = model_refusal(model, allowed)
        if reason is not None:
            errors.append(InputError(f"model {model!r} is not allowed: {reason}", path, line))
    return suite_plan, errors


def _version_problems(suite_plan: SuitePlan) -> list[str]:
    base, head = suite_plan.base_prompt, suite_plan.head_prompt
    # Only evalbot's own format carries a version; other formats are compared by their content alone.
    if base is None or head.version is None or base.version is None or base.content == head.content:
        return []
    if semver_key(head.version) > semver_key(base.version):
        return []
    message = f"changed without a version bump: version {head.version} must be higher than the base's {base.version}"
    return [Problem(f"{head.path} {message}", head.path, head.version_line, message)]
