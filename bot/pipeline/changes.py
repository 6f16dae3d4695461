"""Stage 1-3: load the config at both revisions, find the affected suites, and validate their files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from bot.errors import InputError, UnknownSuiteError
from bot.pipeline.config import (
    CONFIG_PATH,
    Config,
    HallucinationGrader,
    Limits,
    RubricGrader,
    Suite,
    model_refusal,
)
from bot.pipeline.datasets import Dataset, id_field_candidates
from bot.pipeline.files import read_config, read_dataset, read_prompt
from bot.pipeline.prompts import Prompt, semver_key
from bot.pipeline.source import Source


@dataclass(frozen=True)
class SuitePlan:
    """One suite to evaluate: the base and head prompt on the head's golden cases."""

    suite: Suite
    head_prompt: Prompt
    base_prompt: Prompt | None
    dataset: Dataset
    reasons: tuple[str, ...]

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


@dataclass
class Plan:
    """What to evaluate, and what is wrong before any model is called."""

    config: Config
    changed_paths: list[str]
    head: str = ""
    # The base's config: policy such as each suite's data gates comes from it.
    base_config: Config | None = None
    suites: list[SuitePlan] = field(default_factory=list)
    # Input that cannot be read or run (CLI exit 2); nothing is evaluated while there is any.
    errors: list[InputError] = field(default_factory=list)
    # Rules broken by readable input, such as a prompt changed without a version bump: the gate fails.
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
    try:
        base_config = await read_config(source, base)
    except InputError as exc:
        warnings.append(f"base {CONFIG_PATH} is invalid ({exc}); default policy applies")
        base_config = None
    config = head_config.with_policy_of(base_config or Config())
    changed = await source.changed_paths(base, head) if base != head else []
    result = Plan(config=config, changed_paths=changed, head=head, base_config=base_config, warnings=warnings)

    unknown = [name for name in only or [] if config.suite(name) is None]
    if unknown:
        known = ", ".join(s.name for s in config.suites) or "none"
        raise UnknownSuiteError(f"unknown suite {', '.join(map(repr, unknown))} (suites: {known})", CONFIG_PATH)
    for model in models or []:
        reason = model_refusal(model, config.allowed_models)
        if reason is not None:
            raise InputError(f"--models: model {model!r} is not allowed: {reason}")

    for suite in config.suites:
        reasons = _reasons(suite, base_config, head_config, changed)
        # Naming suites adds to what changed, never hides it: a partial run must not pass the gate
        # for a suite it left out.
        if only and suite.name in only and not reasons:
            reasons = ["named on the command line"]
        elif run_all and not reasons:
            reasons = ["all suites requested"]
        if not reasons:
            continue
        try:
            suite_plan = await _load_suite(source, base, head, suite, tuple(reasons), config.limits)
        except InputError as exc:
            result.errors.append(exc)
            continue
        allowed, refused = _apply_model_policy(suite_plan, config, head_config, base_config)
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
        result.problems += _version_problems(suite_plan)
    if base_config is not None and base != head:
        for gone in base_config.suites:
            if config.suite(gone.name) is None:
                result.problems.append(
                    f"suite {gone.name} of the base's {CONFIG_PATH} is gone in this change: removing or renaming "
                    "a suite takes its files out of the gate, so it needs a lead's approval with a reason"
                )
    return result


def _reasons(suite: Suite, base_config: Config | None, head_config: Config, changed: list[str]) -> list[str]:
    reasons = [f"{path} changed" for path in suite.paths() if path in changed]
    base_suite = base_config.suite(suite.name) if base_config else None
    if base_suite is None:
        reasons.append("new suite")
    elif base_suite != suite:
        reasons.append(f"its entry in {CONFIG_PATH} changed")
    elif base_config is not None and (base_config.judge, base_config.prices) != (head_config.judge, head_config.prices):
        reasons.append(f"judge or prices in {CONFIG_PATH} changed")
    return reasons


async def _load_suite(
    source: Source, base: str, head: str, suite: Suite, reasons: tuple[str, ...], limits: Limits
) -> SuitePlan:
    head_prompt = await read_prompt(source, head, suite.prompt, limits)
    if head_prompt is None:
        raise InputError(f"prompt file of suite {suite.name!r} does not exist", suite.prompt)
    dataset = await read_dataset(source, head, suite.dataset, limits, id_field=suite.id_field)
    if dataset is None:
        raise InputError(f"dataset of suite {suite.name!r} does not exist", suite.dataset)
    if not dataset.cases:
        raise InputError(f"dataset of suite {suite.name!r} has no rows", suite.dataset)

    base_prompt = None
    if base != head:
        try:
            base_prompt = await read_prompt(source, base, suite.prompt, limits)
        except InputError:
            # A broken base prompt is what a pull request may be fixing: evaluate the head alone.
            base_prompt = None

    for prompt in filter(None, (head_prompt, base_prompt)):
        for case in dataset.cases:
            missing = prompt.missing_fields(case.fields)
            if missing:
                which = "base" if prompt is base_prompt else "head"
                raise InputError(
                    f"row {case.id!r} has no field {', '.join(missing)} for the {which} prompt's placeholders",
                    suite.dataset,
                    case.line,
                    case.row,
                )
    return SuitePlan(suite=suite, head_prompt=head_prompt, base_prompt=base_prompt, dataset=dataset, reasons=reasons)


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
    suite_plan: SuitePlan, config: Config, head_config: Config, base_config: Config | None
) -> tuple[SuitePlan, list[InputError]]:
    """The suite plan without a base prompt whose model the policy refuses, and an InputError for every
    other model string of the suite that it refuses, at its file and line (made before any call)."""
    allowed = config.allowed_models
    base_prompt = suite_plan.base_prompt
    if base_prompt is not None and model_refusal(base_prompt.spec.model, allowed) is not None:
        # What the base calls is what a pull request may be moving away from: evaluate the head alone.
        suite_plan = dataclasses.replace(suite_plan, base_prompt=None)
    suite = suite_plan.suite
    index = head_config.suites.index(suite) if suite in head_config.suites else None
    at: list[str | int] = ["suites", index] if index is not None else []
    head_prompt = suite_plan.head_prompt
    found: list[tuple[str, str, int | None]] = [(head_prompt.spec.model, head_prompt.path, head_prompt.model_line)]
    found += [(m, CONFIG_PATH, head_config.line([*at, "models", i])) for i, m in enumerate(suite.models)]
    for i, grader in enumerate(suite.graders):
        model = getattr(grader, "model", None)
        if model is not None:
            found.append((model, CONFIG_PATH, head_config.line([*at, "graders", i, "model"])))
        elif isinstance(grader, RubricGrader) or (isinstance(grader, HallucinationGrader) and grader.method == "judge"):
            found.append((config.judge, CONFIG_PATH, base_config.line(["judge"]) if base_config else None))
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
    return [
        f"{head.path} changed without a version bump: version {head.spec.version} must be higher "
        f"than the base's {base.spec.version}"
    ]
