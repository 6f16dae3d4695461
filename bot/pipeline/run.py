"""The pipeline end to end: plan → variants → model calls and grades → comparison → a Report."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.engine import graders as g
from bot.engine.cache import ResponseCache
from bot.engine.concurrency import gather_or_cancel
from bot.engine.metrics import latency_of, per_case
from bot.engine.models import ModelClient, Price, RetryPolicy, SpendLimit, price_usd
from bot.engine.runner import CaseInput, CaseResult, VariantSpec, regrade, run_variant, time_pairs
from bot.errors import BudgetExhausted, InputError, Problem, sorted_errors, unpack
from bot.pipeline.adversarial import AdversarialReport, plan_attacks, run_attacks
from bot.pipeline.budget import Estimate, SpendCaps, attack_estimate, estimate
from bot.pipeline.changes import Plan, PolicyChange, SuitePlan, plan
from bot.pipeline.compare import LatencyEvidence, SuiteReport, assertion_counts, compare_suite
from bot.pipeline.config import (
    CONFIG_PATH,
    ClosedQaGrader,
    Config,
    ContainsAllGrader,
    ContainsAnyGrader,
    ContainsGrader,
    ContainsJsonGrader,
    CostGrader,
    EqualsGrader,
    FactualityGrader,
    FuzzyMatchGrader,
    GraderSpec,
    HallucinationGrader,
    IsJsonGrader,
    JsonSchemaGrader,
    LatencyGrader,
    LevenshteinGrader,
    NotGrader,
    PromptfooAssertionGrader,
    RegexGrader,
    RubricGrader,
    SimilarityGrader,
    StartsWithGrader,
    model_refusal,
)
from bot.pipeline.data_quality import DataQuality, check
from bot.pipeline.fairness import FairnessReport, assess
from bot.pipeline.files import read_file
from bot.pipeline.formats.promptfoo import assertion_grader
from bot.pipeline.lineage import LineageCheck, check_sources, row_changes
from bot.pipeline.policies import PolicyReview, Reviewed, review
from bot.pipeline.prompts import Prompt
from bot.pipeline.source import Source
from bot.pipeline.tradeoff import compare_models, worse_everywhere
from bot.pipeline.variants import Variant

# (calls done, calls in all, calls answered from cache)
ProgressCallback = Callable[[int, int, int], None]


@dataclass
class RunOptions:
    """How to run: which suites, where models live, how hard to push them."""

    only: list[str] | None = None
    run_all: bool = False
    api_base: str | None = None
    concurrency: int = 8
    cache: ResponseCache | None = None
    on_progress: ProgressCallback | None = None
    retry: RetryPolicy | None = None
    # Lifts `budget.max_cost_usd` for this run (`/eval --budget N` by an approver).
    budget_usd: float | None = None
    # Models to compare the head prompt on, beside the suites' `models:` (`--models`, `/eval --models`).
    models: list[str] = field(default_factory=list)
    # Call the models under test even for answers in the cache (judges still use it): a scheduled
    # re-evaluation must see what the provider answers today.
    fresh: bool = False
    # Reserves the run's estimate against the caps across runs (per pull request, per day) before any
    # call; None: the run is bounded by its own budget only (the CLI).
    reserve: Callable[[float], Awaitable[SpendCaps]] | None = None


@dataclass(frozen=True)
class Spend:
    """The run's own calls: how many, how many from cache, and what they cost."""

    calls: int
    cached: int
    http_requests: int
    retries: int
    errors: int
    under_test_usd: float
    judge_calls: int
    judge_usd: float
    unpriced_calls: int
    cache_backend: str
    wall_s: float
    # Answers made by this run (not from the cache) that passed every accuracy grader.
    passed_answers: int = 0
    # Calls that measured latency again, base and head back to back, because answers came from the
    # cache (in `calls`, `http_requests` and `under_test_usd` too), and what they cost.
    latency_calls: int = 0
    latency_usd: float = 0.0
    # Calls of the adversarial attacks (not in `calls` nor `under_test_usd`: they measure no answer's
    # quality), and what they cost; their judge calls are in `judge_calls`.
    attack_calls: int = 0
    attack_usd: float = 0.0

    @property
    def per_success_usd(self) -> float | None:
        """Cost per successful inference: what the calls under test cost, failed and retried ones
        included, per answer made now that passed. None when nothing passed or a price is unknown."""
        if not self.passed_answers or self.unpriced_calls:
            return None
        return self.under_test_usd / self.passed_answers


@dataclass(frozen=True)
class DefinitionChange:
    """A suite whose exam the change rewrites, and what it changes (plain text, one line each)."""

    suite: str
    changes: list[str]


@dataclass(frozen=True)
class Breach:
    """A threshold passed by the point estimate but not significantly: a lead approves it with a reason."""

    suite: str
    metric: str
    delta: float
    delta_unit: str
    threshold: float
    p_value: float | None


@dataclass(frozen=True)
class Stopped:
    """Where a run stopped when its real spend reached the budget: nothing after it was started."""

    spent_usd: float
    budget_usd: float
    calls_done: int
    calls_planned: int


@dataclass
class Report:
    """Everything a renderer needs; `verdict` is the gate (`error`: input could not be read or run)."""

    base_ref: str
    head_ref: str
    changed_paths: list[str]
    suites: list[SuiteReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    spend: Spend | None = None
    # Who may approve, from the base branch's policy (for the approval check).
    approvers: list[str] = field(default_factory=list)
    estimate: Estimate | None = None
    budget_usd: float | None = None
    data: list[DataQuality] = field(default_factory=list)
    # Suites whose exam the change rewrites: graded by the base's, the head's shown beside it.
    definition_changes: list[DefinitionChange] = field(default_factory=list)
    # The base's `.evalbot.yml` cannot be read: nothing evaluated, the gate fails (no default policy).
    policy_error: str | None = None
    # Set when the real spend reached the budget mid-run: the run is partial and cannot pass.
    stopped: Stopped | None = None
    # Policy keys of `.evalbot.yml` the change sets differently from the merge base: a base approver's call.
    policy_changes: list[PolicyChange] = field(default_factory=list)
    # Spend across runs as the run found it, when it is bounded across runs.
    caps: SpendCaps | None = None
    # The base's `policies:` on every affected prompt (None: the base sets none).
    policy: PolicyReview | None = None
    # The `lineage:` gate of each affected suite that sets one.
    lineage: list[LineageCheck] = field(default_factory=list)
    # The `adversarial:` gate of each affected suite that sets one.
    adversarial: list[AdversarialReport] = field(default_factory=list)

    @property
    def inconclusive(self) -> list[Breach]:
        rows = [
            Breach(s.name, row.label, row.delta, row.delta_unit, row.threshold, row.p_value)
            for s in self.suites
            for row in s.inconclusive
            if row.delta is not None and row.threshold is not None
        ]
        # An attack family whose success rate rose, not significantly: a lead owns the call, with a reason.
        attacks = [
            Breach(a.suite, f"Attack success: {f.family}", f.delta_pp, "pp", a.max_increase_pp, f.p_holm)
            for a in self.adversarial
            for f in a.inconclusive
            if f.delta_pp is not None
        ]
        fairness = [breach for f in self.fairness for breach in _fairness_breaches(f)]
        return rows + attacks + fairness

    @property
    def fairness(self) -> list[FairnessReport]:
        """The `fairness:` gate of each suite whose exam sets one."""
        return [s.fairness for s in self.suites if s.fairness is not None]

    @property
    def budget_refused(self) -> bool:
        """The estimate is above the budget, or cannot be bounded (a model with no known price)."""
        if self.estimate is None or self.budget_usd is None:
            return False
        return self.estimate.usd > self.budget_usd or bool(self.estimate.unpriced_models)

    @property
    def verdict(self) -> Literal["pass", "fail", "error"]:
        if self.errors:
            return "error"
        failed = self.problems or any(s.verdict == "fail" for s in self.suites) or any(d.failed for d in self.data)
        governance = (self.policy is not None and self.policy.failed) or any(lc.failed for lc in self.lineage)
        governance = governance or any(a.failed for a in self.adversarial)
        governance = governance or any(f.failed for f in self.fairness)
        if failed or governance or self.policy_error or self.stopped is not None:
            return "fail"
        return "pass"

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "fail": 1, "error": 2}[self.verdict]


def _fairness_breaches(report: FairnessReport) -> list[Breach]:
    """A fairness gate past its limit but not significantly: a lead decides, with a reason."""
    found = []
    groups, probes = report.groups, report.counterfactual
    if groups is not None and groups.verdict == "inconclusive" and groups.change_pp is not None:
        # A group is harmed when both its tests are significant: the larger p of each decides it.
        decisive = [
            max(r.p_holm, r.p_behind_holm)
            for r in groups.groups
            if r.p_holm is not None and r.p_behind_holm is not None
        ]
        p_value = min(decisive, default=None)
        metric = f"Fairness gap ({groups.field})"
        found.append(Breach(report.suite, metric, groups.change_pp, "pp", groups.threshold_pp, p_value))
    if probes is not None and probes.verdict == "inconclusive" and probes.head.rate is not None:
        metric = f"Counterfactual flip rate ({probes.field})"
        rate, limit = probes.head.rate * 100, probes.max_flip_rate * 100
        found.append(Breach(report.suite, metric, rate, "%", limit, probes.p_value))
    return found


def build_graders(specs: list[GraderSpec], judge: ModelClient, judge_model: str) -> list[g.Grader]:
    """Engine graders for a suite's `graders:` entries."""
    built = []
    for spec in specs:
        match spec:
            case EqualsGrader():
                built.append(g.equals(spec.field, spec.ignore_case))
            case ContainsGrader():
                built.append(g.contains(spec.field, spec.ignore_case, spec.match))
            case StartsWithGrader():
                built.append(g.starts_with(spec.field, spec.ignore_case))
            case FuzzyMatchGrader():
                built.append(g.fuzzy_match(spec.field))
            case RegexGrader():
                built.append(g.regex(spec.pattern, spec.field, spec.ignore_case))
            case JsonSchemaGrader():
                built.append(g.json_schema(spec.schema_))
            case RubricGrader():
                built.append(g.rubric(judge, spec.model or judge_model, spec.criteria, spec.pass_score, spec.field))
            case SimilarityGrader():
                built.append(g.similarity(judge, spec.model, spec.field, spec.threshold))
            case HallucinationGrader():
                built.append(g.hallucination(judge, spec.model or judge_model, spec.context_field, spec.method))
            case ContainsAnyGrader() | ContainsAllGrader():
                mode: Literal["any", "all"] = "any" if isinstance(spec, ContainsAnyGrader) else "all"
                built.append(g.contains_texts(spec.values, spec.field, mode, spec.ignore_case))
            case IsJsonGrader():
                built.append(g.is_json(spec.schema_))
            case ContainsJsonGrader():
                built.append(g.contains_json(spec.schema_))
            case LevenshteinGrader():
                built.append(g.levenshtein(spec.value, spec.field, spec.max_distance))
            case LatencyGrader():
                built.append(g.latency(spec.max_ms))
            case CostGrader():
                built.append(g.cost(spec.max_usd))
            case ClosedQaGrader():
                built.append(g.closed_qa(judge, spec.model or judge_model, spec.value, spec.field))
            case FactualityGrader():
                built.append(g.factuality(judge, spec.model or judge_model, spec.field))
            case PromptfooAssertionGrader():
                built.append(assertion_grader(spec, judge, judge_model))
            case NotGrader():
                built += [g.negate(inner) for inner in build_graders([spec.grader], judge, judge_model)]
    return built


def _cases(prompt: Prompt, suite_plan: SuitePlan) -> list[CaseInput]:
    # Each distinct request once (a repeated one is one sample); removed rows a prompt cannot render are
    # a plan problem (the gate fails): skipped here.
    requests = suite_plan.requests(prompt)
    cases = [c for c in suite_plan.evaluated_cases if c.id in requests]
    return [CaseInput(c.id, c.category, c.fields, requests[c.id]) for c in cases]


def _without_model(prompt: Prompt) -> dict[str, Any]:
    return {k: v for k, v in prompt.content.items() if k != "model"}


def _spec(name: str, prompt: Prompt, model: str) -> VariantSpec:
    return VariantSpec(name, model, prompt.temperature, prompt.output_tokens, prompt.tools)


async def evaluate(source: Source, base: str, head: str, options: RunOptions | None = None) -> Report:
    """Evaluate what changed between `base` and `head` and compare the two.

    Args:
        source: the repository.
        base: the base revision (policy and "before" prompts).
        head: the head revision (suites, datasets and "after" prompts).
        options: suites, model endpoint, concurrency, cache and progress.

    Raises:
        InputError: when the head's `.evalbot.yml` cannot be read, a named suite is unknown, or the
            base's `allowed_models` refuses a model of `options.models`.
    """
    options = options or RunOptions()
    the_plan = await plan(source, base, head, options.only, options.run_all, options.models)
    report = Report(
        base,
        head,
        the_plan.changed_paths,
        problems=the_plan.problems,
        warnings=the_plan.warnings,
        approvers=the_plan.config.approvers,
        policy_error=the_plan.policy_error,
        policy_changes=the_plan.policy_changes,
        definition_changes=[
            DefinitionChange(sp.suite.name, list(sp.definition_changes))
            for sp in the_plan.suites
            if sp.definition_changes
        ],
    )
    # The suites that can be read are checked even when others cannot: every problem is listed at once.
    report.data = await data_checks(source, the_plan, base)
    if the_plan.errors:
        report.errors = [Problem.of(error) for error in the_plan.errors]
        return report
    if not the_plan.suites:
        return report
    report.budget_usd = options.budget_usd if options.budget_usd is not None else the_plan.config.budget.max_cost_usd
    # Against the base, rows the change adds or edits are its own (the run page shows them as such).
    report.lineage = [
        check_sources(
            sp.suite.name,
            sp.dataset,
            sp.suite.lineage,
            row_changes(sp.dataset, sp.base_dataset) if base != head else None,
        )
        for sp in the_plan.suites
        if sp.suite.lineage
    ]
    price = functools.partial(price_usd, prices=_prices(the_plan.config))
    billed_attempts = (options.retry or RetryPolicy()).max_billed_attempts
    cached = options.cache is not None and not options.fresh
    report.estimate = estimate(the_plan, price, options.models, billed_attempts, cached)
    # Attacks are rendered before any call: the budget prices them with the rest.
    attacks = await plan_attacks(source, the_plan)
    attack_estimate(report.estimate, attacks, price, the_plan.config.judge)
    if report.estimate.unpriced_models:
        report.problems.append(
            f"no price is known for {', '.join(report.estimate.unpriced_models)}, so the budget cannot bound the "
            f"run: add it to `prices:` in the base branch's {CONFIG_PATH}; nothing was run"
        )
        return report
    if report.budget_refused:
        report.problems.append("the estimated cost is above the budget: nothing was run")
        return report
    limit_usd = report.budget_usd
    if options.reserve is not None:
        report.caps = await options.reserve(report.estimate.usd)
        if not report.caps.reserved:
            report.problems.append(
                "the estimated cost is above what the budget across runs leaves (per pull request, per day): "
                "nothing was run"
            )
            return report
        # Stopped live at the first cap reached, this run's or one across runs.
        limit_usd = min(limit_usd, report.caps.left_usd)
    limit = SpendLimit(limit_usd)
    if the_plan.config.policies:
        report.policy = await review_policies(source, base, the_plan, options, limit)

    async def attack(client: ModelClient, judge: ModelClient) -> None:
        report.adversarial = await run_attacks(attacks, client, judge, the_plan.config)

    report.suites, report.spend, report.stopped = await _run_plan(
        the_plan, options, limit, report.estimate.calls, attack if attacks else None
    )
    return report


async def data_checks(source: Source, the_plan: Plan, base: str | None) -> list[DataQuality]:
    """Data quality of every planned suite whose dataset, schema or training data changed.

    Args:
        source: the repository.
        the_plan: the suites to check.
        base: the base revision to compare with; None to check every suite on its own (validate).

    A schema or training data file that cannot be read is added to `the_plan.errors` (kept sorted by
    file and line), and its suite left out; the other suites are still checked.
    """
    results = []
    for sp in the_plan.suites:
        suite = sp.suite
        data_paths = [path for path in (suite.dataset, suite.schema_, suite.training_data) if path]
        if base is not None and not any(path in the_plan.changed_paths for path in data_paths):
            continue
        base_dataset = sp.base_dataset if base is not None else None
        # `suite` carries the base's exam, data gates included, so a rename or an edit cannot shed them.
        try:
            schema = await _file(source, the_plan, sp.exam_ref or the_plan.head, suite.schema_)
            training = await _file(source, the_plan, the_plan.head, suite.training_data)
            # Off the event loop: the checks of a large dataset must not hold up other jobs' progress.
            quality = await asyncio.to_thread(
                check, suite.name, sp.dataset, base_dataset, suite.data_gates, sp.head_prompt, schema, training
            )
        except InputError as exc:
            the_plan.errors = sorted_errors(the_plan.errors + unpack(exc))
            continue
        results.append(quality)
    return results


async def review_policies(
    source: Source, base: str, the_plan: Plan, options: RunOptions, limit: SpendLimit
) -> PolicyReview:
    """The base's `policies:` on every planned suite's prompts and datasets, head and base; judged rules
    by the base's judge, on a client of their own that spends from the run's budget (`limit`)."""
    config = the_plan.config

    async def text(ref: str, prompt: Prompt | None) -> str | None:
        # Only to find annotation lines: a file already read once, so an error here is not the review's.
        with contextlib.suppress(InputError):
            return None if prompt is None else await read_file(source, ref, prompt.path, config.limits)
        return None

    items = [
        Reviewed(
            sp.suite.name,
            sp.head_prompt,
            sp.base_prompt,
            sp.dataset,
            sp.base_dataset,
            await text(the_plan.head, sp.head_prompt),
            await text(base, sp.base_prompt),
        )
        for sp in the_plan.suites
    ]
    refused = model_refusal(config.judge, config.allowed_models)
    if refused is not None and any(p.question for p in config.policies):
        return PolicyReview(
            errors=[f"judged policies need the judge {config.judge!r}, which is not allowed: {refused}"]
        )
    judge = ModelClient(options.cache, _prices(config), options.concurrency, options.retry, options.api_base, limit)
    try:
        return await review(items, config.policies, judge, config.judge)
    finally:
        await judge.aclose()


async def _file(source: Source, the_plan: Plan, ref: str, path: str | None) -> tuple[str, str] | None:
    if path is None:
        return None
    text = await read_file(source, ref, path, the_plan.config.limits)
    if text is None:
        raise InputError("file named in .evalbot.yml does not exist", path)
    return path, text


def _prices(config: Config) -> dict[str, Price]:
    return {m: (p.input_per_1k, p.output_per_1k) for m, p in config.prices.items()}


# Work run after the suites on a client of its own and the run's judge, within the run's budget.
AfterSuites = Callable[[ModelClient, ModelClient], Awaitable[None]]


async def _run_plan(
    the_plan: Plan, options: RunOptions, limit: SpendLimit, calls_planned: int, after: AfterSuites | None = None
) -> tuple[list[SuiteReport], Spend, Stopped | None]:
    """Run every planned suite, then `after`; stop starting calls once the real spend reaches `limit`
    (then no suite is reported: a partial comparison would not say what the change does)."""
    prices = _prices(the_plan.config)
    # One owner for both clients: the run's calls and its judges' take one turn together, among
    # the other runs sharing the provider's limit in a worker.
    owner = object()
    shared = (options.concurrency, options.retry, options.api_base, limit, owner)
    client = ModelClient(None if options.fresh else options.cache, prices, *shared)
    # Judges get their own client: their spend is the evaluation's cost, not the prompt's.
    judge = ModelClient(options.cache, prices, *shared)
    # Latency measured again never comes from the cache (nor from a call in flight for another case).
    measure = ModelClient(None, prices, *shared)
    # Adversarial attacks: the same budget, cache and turn, their spend counted apart.
    attacker = ModelClient(None if options.fresh else options.cache, prices, *shared)
    try:
        return await _run_suites(the_plan, options, limit, calls_planned, client, judge, measure, attacker, after)
    finally:
        await client.aclose()
        await judge.aclose()
        await measure.aclose()
        await attacker.aclose()


async def _run_suites(
    the_plan: Plan,
    options: RunOptions,
    limit: SpendLimit,
    calls_planned: int,
    client: ModelClient,
    judge: ModelClient,
    measure: ModelClient,
    attacker: ModelClient,
    after: AfterSuites | None = None,
) -> tuple[list[SuiteReport], Spend, Stopped | None]:
    config: Config = the_plan.config

    started = time.perf_counter()
    total = sum(len(sp.evaluated_cases) * sp.suite.repeats * len(sp.variants(options.models)) for sp in the_plan.suites)
    done = cached = passed = 0

    def progress(result: CaseResult) -> None:
        nonlocal done, cached, passed
        done += 1
        cached += result.cached
        passed += result.passed is True and not result.cached
        if options.on_progress is not None:
            options.on_progress(done, total, cached)

    async def suite_report(sp: SuitePlan) -> SuiteReport:
        graders = build_graders(sp.suite.graders, judge, config.judge)

        async def variant(name: str, prompt: Prompt, model: str) -> Variant:
            spec = _spec(name, prompt, model)
            results = await run_variant(client, spec, _cases(prompt, sp), graders, sp.suite.repeats, progress)
            return Variant(name, prompt.revision, model, results)

        async def probe(name: str, prompt: Prompt, model: str, cases: list[CaseInput]) -> list[CaseResult]:
            # Counterfactual probes: on the run's client and budget, outside the progress of its cases.
            return await run_variant(client, _spec(name, prompt, model), cases, graders, sp.suite.repeats)

        others = sp.other_models(options.models)
        head_variant, *rest = await gather_or_cancel(*(variant(*v) for v in sp.variants(options.models)))
        model_variants = dict(zip(others, rest[: len(others)], strict=True))
        base_variant = rest[len(others)] if sp.base_prompt is not None else None
        latency = None
        answers = [*head_variant.results, *(base_variant.results if base_variant else [])]
        if base_variant is not None and any(r.stored for r in answers):
            latency = await remeasure(sp, base_variant, head_variant)
        report = compare_suite(sp.suite.name, list(sp.reasons), base_variant, head_variant, config.thresholds, latency)
        report.fairness = await assess(sp, base_variant, head_variant, probe, config.thresholds)
        report.definition_hash = sp.definition_hash(config.judge)
        if any(isinstance(spec, PromptfooAssertionGrader) for spec in sp.suite.graders):
            report.assertions_head = assertion_counts(head_variant.results)
            report.assertions_base = assertion_counts(base_variant.results) if base_variant is not None else []
        report.removed_cases = [case.id for case in sp.removed]
        regressed = {flip.case_id for flip in report.regressions}
        report.dataset = sp.dataset.path
        report.regression_lines = {case.id: case.line for case in sp.dataset.cases if case.id in regressed}
        if sp.head_exam is not None:
            report.head_definition = await under_head_exam(sp, base_variant, head_variant)
        if others:
            reference = sp.current_model
            variants = {**model_variants, sp.head_prompt.model: head_variant}
            ordered = {m: variants[m] for m in [reference, *others, sp.head_prompt.model] if m in variants}
            report.models = compare_models(reference, ordered, config.thresholds.accuracy_drop_pp)
        if sp.base_prompt is not None and base_variant is not None and sp.base_prompt.model != head_variant.model:
            # A model change: the seed's rule replaces the thresholds — fail only when the new model is
            # worse on every metric; the trade-off goes to a lead through evalbot/approval either way.
            old = model_variants.get(sp.base_prompt.model, base_variant)
            report.model_change = (sp.base_prompt.model, head_variant.model)
            prompt_changed = _without_model(sp.base_prompt) != _without_model(sp.head_prompt)
            # When the prompt changed too, its thresholds still apply: a model switch is no free pass.
            threshold_failed = prompt_changed and report.verdict == "fail"
            # Nor is a model that fails calls or leaves accuracy unmeasured: missing evidence is not a trade-off.
            broken = bool(report.no_evidence) or any(
                row.key == "failed_calls" and row.verdict == "fail" for row in report.rows
            )
            report.verdict = "fail" if worse_everywhere(old, head_variant) or threshold_failed or broken else "pass"
        return report

    async def remeasure(sp: SuitePlan, base: Variant, head: Variant) -> LatencyEvidence:
        """Latency of a random sample of the cases both answered, base and head called again back to back
        in a random order: cached latencies were measured another day, under another load."""
        assert sp.base_prompt is not None
        rng = random.Random()
        base_cases = {case.id: case for case in _cases(sp.base_prompt, sp)}
        head_cases = {case.id: case for case in _cases(sp.head_prompt, sp)}
        answered = set(per_case(base.results, latency_of)) & set(per_case(head.results, latency_of))
        candidates = [case_id for case_id in head_cases if case_id in answered and case_id in base_cases]
        chosen = set(rng.sample(candidates, min(sp.suite.latency_sample, len(candidates))))
        cases = [(base_cases[c], head_cases[c]) for c in candidates if c in chosen]
        specs = _spec(base.name, sp.base_prompt, base.model), _spec(head.name, sp.head_prompt, head.model)
        return LatencyEvidence(await time_pairs(measure, *specs, cases, rng), remeasured=True)

    async def under_head_exam(sp: SuitePlan, base: Variant | None, head: Variant) -> SuiteReport:
        """The answers of this run graded again by the head's own graders (judge calls only)."""
        assert sp.head_exam is not None
        graders = build_graders(sp.head_exam.graders, judge, the_plan.head_judge or config.judge)

        async def again(variant: Variant, prompt: Prompt) -> Variant:
            results = await regrade(variant.results, _cases(prompt, sp), graders)
            return Variant(variant.name, variant.version, variant.model, results)

        head_again = await again(head, sp.head_prompt)
        base_again = await again(base, sp.base_prompt) if base is not None and sp.base_prompt is not None else None
        return compare_suite(sp.head_exam.name, list(sp.reasons), base_again, head_again, config.thresholds)

    stopped = None
    try:
        suites = await gather_or_cancel(*(suite_report(sp) for sp in the_plan.suites))
        if after is not None:
            await after(attacker, judge)
    except BudgetExhausted:
        suites = []
        answered = sum(c.stats.answered for c in (client, judge, measure, attacker))
        stopped = Stopped(limit.spent_usd, limit.budget_usd, answered, calls_planned)
    s, j, lm, a = client.stats, judge.stats, measure.stats, attacker.stats
    spend = Spend(
        calls=s.calls + lm.calls,
        cached=s.cached,
        http_requests=s.http_requests + j.http_requests + lm.http_requests + a.http_requests,
        retries=s.retries + j.retries + lm.retries + a.retries,
        errors=s.errors + j.errors + lm.errors + a.errors,
        under_test_usd=s.spend_usd + lm.spend_usd,
        judge_calls=j.calls,
        judge_usd=j.spend_usd,
        unpriced_calls=s.unpriced + j.unpriced + lm.unpriced + a.unpriced,
        cache_backend=options.cache.name if options.cache else "off",
        wall_s=time.perf_counter() - started,
        passed_answers=passed,
        latency_calls=lm.calls,
        latency_usd=lm.spend_usd,
        attack_calls=a.calls,
        attack_usd=a.spend_usd,
    )
    return suites, spend, stopped
