"""Stage 1-3: load the config at both revisions, find the affected suites, and validate their files."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bot.errors import InputError, InputErrors, Problem, UnknownSuiteError, sorted_errors, unpack
from bot.pipeline.config import (
    CONFIG_PATH,
    Config,
    GraderSpec,
    HallucinationGrader,
    Limits,
    RubricGrader,
    Suite,
    model_refusal,
    policy_values,
)
from bot.pipeline.datasets import Case, Dataset, id_field_candidates
from bot.pipeline.files import read_config, read_dataset, read_prompt
from bot.pipeline.prompts import Prompt, semver_key
from bot.pipeline.source import Source


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

    @property
    def cases(self) -> tuple[Case, ...]:
        """Every case evaluated: the head's rows, then the removed base rows."""
        return self.dataset.cases + self.removed

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
        return (self.base_prompt or self.head_prompt).spec.model

    def other_models(self, requested: list[str]) -> list[str]:
        """Models to run the head prompt on besides its own: the current one when the change switches
        models (old vs new, same prompt), the suite's `models:` and those requested for this run."""
        head_model = self.head_prompt.spec.model
        candidates = list(dict.fromkeys([self.current_model, *self.suite.models, *requested]))
        if candidates == [head_model]:
            return []  # one model only: the base/head comparison says it all
        return [m for m in candidates if m != head_model]

    def variants(self, requested: list[str]) -> list[tuple[str, Prompt, str]]:
        """Every (name, prompt, model) to evaluate: the head, the head prompt on each other model, the base."""
        found = [("head", self.head_prompt, self.head_prompt.spec.model)]
        found += [(model, self.head_prompt, model) for model in self.other_models(requested)]
        if self.base_prompt is not None:
            found.append(("base", self.base_prompt, self.base_prompt.spec.model))
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
                f"{suite.prompt}: the base's model {suite_plan.base_prompt.spec.model!r} is not allowed by the "
                "base's policy: the head is evaluated alone"
            )
        suite_plan = allowed
        result.suites.append(suite_plan)
        result.warnings += suite_plan.head_prompt.warnings
        result.warnings += _id_warnings(suite_plan)
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


def _reasons(suite: Suite, base_config: Config | None, head_config: Config, changed: list[str]) -> list[str]:
    reasons = [f"{path} changed" for path in suite.paths() if path in changed]
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
    # Both files are read whatever the other holds: one bad file must not hide the other's problems.
    errors: list[InputError] = []
    head_prompt = dataset = None
    try:
        head_prompt = await read_prompt(source, head, suite.prompt, limits)
        if head_prompt is None:
            errors.append(InputError(f"prompt file of suite {suite.name!r} does not exist", suite.prompt))
    except InputError as exc:
        errors.append(exc)
    try:
        dataset = await read_dataset(source, head, suite.dataset, limits, id_field=suite.id_field)
        if dataset is None:
            errors.append(InputError(f"dataset of suite {suite.name!r} does not exist", suite.dataset))
        elif not dataset.cases:
            errors.append(InputError(f"dataset of suite {suite.name!r} has no rows", suite.dataset))
    except InputError as exc:
        errors.append(exc)

    base_prompt = None
    if base != head:
        try:
            base_prompt = await read_prompt(source, base, (base_suite or suite).prompt, limits)
        except InputError:
            # A broken base prompt is what a pull request may be fixing: evaluate the head alone.
            base_prompt = None

    for prompt in filter(None, (head_prompt, base_prompt)):
        for case in dataset.cases if dataset is not None else ():
            missing = prompt.missing_fields(case.fields)
            if missing:
                which = "base" if prompt is base_prompt else "head"
                errors.append(
                    InputError(
                        f"row {case.id!r} has no field {', '.join(missing)} for the {which} prompt's placeholders",
                        suite.dataset,
                        case.line,
                        case.row,
                    )
                )
    if errors or head_prompt is None or dataset is None:
        raise InputErrors(errors)
    base_dataset = None
    if base != head:
        with contextlib.suppress(InputError):  # a broken base dataset is what the change may fix
            # The head's id_field names the base's rows too, so that cases pair up.
            base_dataset = await read_dataset(
                source, base, (base_suite or suite).dataset, limits, id_field=suite.id_field
            )
    removed: tuple[Case, ...] = ()
    if base_suite is not None and base_dataset is not None:
        kept = {case.id for case in dataset.cases}
        removed = tuple(c for c in base_dataset.cases if c.id not in kept)
    return SuitePlan(
        # The base grades a suite it knows: a pull request cannot set its own exam.
        suite=suite.with_exam_of(base_suite) if base_suite is not None else suite,
        head_prompt=head_prompt,
        base_prompt=base_prompt,
        dataset=dataset,
        reasons=reasons,
        removed=removed,
        base_dataset=base_dataset,
        exam_ref=base if base_suite is not None else head,
    )


def _unrunnable_removed(suite_plan: SuitePlan) -> list[str]:
    """Removed rows the prompts cannot be filled from: they cannot be evaluated, so the gate fails."""
    problems = []
    for case in suite_plan.removed:
        for prompt in filter(None, (suite_plan.head_prompt, suite_plan.base_prompt)):
            missing = prompt.missing_fields(case.fields)
            if missing:
                problems.append(
                    f"row {case.id!r} that this change removes from {suite_plan.dataset.path} has no field "
                    f"{', '.join(missing)} for {prompt.path}: it cannot be evaluated, so removing it needs "
                    "a lead's approval with a reason"
                )
                break
    return problems


def _uses_judge(graders: list[GraderSpec]) -> bool:
    """Whether a grader falls back on the config's `judge` (a judge-graded grader with no `model:`)."""
    return any(
        (isinstance(g, RubricGrader) and g.model is None)
        or (isinstance(g, HallucinationGrader) and g.model is None and g.method == "judge")
        for g in graders
    )


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
    gates: dict[str, Any] = base.data_gates.model_dump(by_alias=True)
    for key, value in head.data_gates.model_dump(by_alias=True).items():
        if gates[key] != value:
            changes.append(f"data gate {key}: {gates[key]} → {value}")
    if base_judge != head_judge and (_uses_judge(base.graders) or _uses_judge(head.graders)):
        changes.append(f"judge: {base_judge} → {head_judge}")
    return changes


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
    if base_prompt is not None and model_refusal(base_prompt.spec.model, allowed) is not None:
        # What the base calls is what a pull request may be moving away from: evaluate the head alone.
        suite_plan = dataclasses.replace(suite_plan, base_prompt=None)
    suite = head_suite
    index = head_config.suites.index(suite) if suite in head_config.suites else None
    at: list[str | int] = ["suites", index] if index is not None else []
    head_prompt = suite_plan.head_prompt
    found: list[tuple[str, str, int | None]] = [(head_prompt.spec.model, head_prompt.path, head_prompt.model_line)]
    found += [(m, CONFIG_PATH, head_config.line([*at, "models", i])) for i, m in enumerate(suite.models)]
    base_judge = (config.judge, base_config.line(["judge"]) if base_config else None)
    # (grader, the judge it falls back on with its line, the line of its own `model:`)
    graders: list[tuple[GraderSpec, tuple[str, int | None], int | None]] = [
        (grader, base_judge, None) for grader in suite_plan.suite.graders if suite_plan.head_exam is not None
    ]
    head_judge = (head_config.judge, head_config.line(["judge"])) if suite_plan.head_exam is not None else base_judge
    graders += [(g, head_judge, head_config.line([*at, "graders", i, "model"])) for i, g in enumerate(suite.graders)]
    for grader, (judge, judge_line), line in graders:
        model = getattr(grader, "model", None)
        if model is not None:
            found.append((model, CONFIG_PATH, line))
        elif isinstance(grader, RubricGrader) or (isinstance(grader, HallucinationGrader) and grader.method == "judge"):
            found.append((judge, CONFIG_PATH, judge_line))
    errors = []
    for model, path, line in found:
        reason = model_refusal(model, allowed)
        if reason is not None:
            errors.append(InputError(f"model {model!r} is not allowed: {reason}", path, line))
    return suite_plan, errors


def _version_problems(suite_plan: SuitePlan) -> list[str]:
    base, head = suite_plan.base_prompt, suite_plan.head_prompt
    if base is None or base.spec.content() == head.spec.content():
        return []
    if semver_key(head.spec.version) > semver_key(base.spec.version):
        return []
    message = (
        f"changed without a version bump: version {head.spec.version} must be higher than the base's "
        f"{base.spec.version}"
    )
    return [Problem(f"{head.path} {message}", head.path, head.version_line, message)]
