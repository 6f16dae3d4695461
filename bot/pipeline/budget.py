"""A run's cost estimated before any model call, to refuse one above `budget.max_cost_usd` (or above what
the caps across runs leave)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.engine.graders import (
    FACTUALITY_SYSTEM,
    FACTUALITY_USER,
    JUDGE_MAX_TOKENS,
    context_text,
    hallucination_messages,
    rubric_messages,
)
from bot.pipeline.adversarial import AttackPlan
from bot.pipeline.adversarial import judge_messages as attack_judge_messages
from bot.pipeline.changes import Plan, SuitePlan
from bot.pipeline.config import (
    ClosedQaGrader,
    FactualityGrader,
    HallucinationGrader,
    PromptfooAssertionGrader,
    RubricGrader,
    SimilarityGrader,
    unwrapped,
    uses_judge,
)
from bot.pipeline.fairness import probed_cases
from bot.pipeline.policies import judge_messages

# Without a tokenizer per provider (tiktoken would fetch its tables from the network), a token is
# counted as 4 characters of English text: the usual rule of thumb, within about 20% for prose.
CHARS_PER_TOKEN = 4

PriceFn = Callable[[str, int, int], float | None]


@dataclass(frozen=True)
class SpendCaps:
    """Spend across runs as a run found it (before its own): its pull request's runs and its installation's
    runs today, each with the base branch's cap; `reserved`: the run's estimate fits under both."""

    pull_request_spent_usd: float
    pull_request_usd: float
    day_spent_usd: float
    day_usd: float
    reserved: bool = False

    @property
    def left_usd(self) -> float:
        """What the run may spend before one of the caps is reached."""
        left = min(self.pull_request_usd - self.pull_request_spent_usd, self.day_usd - self.day_spent_usd)
        return max(0.0, left)


@dataclass
class Estimate:
    """Upper-bound estimate: every answer as long as max_tokens allows, every call billed
    `billed_attempts` times (the retry policy's worst case)."""

    calls: int = 0
    usd: float = 0.0
    unpriced_models: list[str] = field(default_factory=list)
    billed_attempts: int = 1

    def add(self, model: str, prompt_tokens: int, completion_tokens: int, price: PriceFn, count: int = 1) -> None:
        self.calls += count
        cost = price(model, prompt_tokens, completion_tokens)
        if cost is None:
            if model not in self.unpriced_models:
                self.unpriced_models.append(model)
        else:
            self.usd += cost * count * self.billed_attempts


def _tokens(*texts: str) -> int:
    return sum(len(text) // CHARS_PER_TOKEN + 1 for text in texts)


def _message_tokens(messages: list[dict[str, str]]) -> int:
    return _tokens(*(m["content"] for m in messages))


def estimate(
    the_plan: Plan,
    price: PriceFn,
    models: list[str] | None = None,
    billed_attempts: int = 1,
    latency_sample: bool = False,
) -> Estimate:
    """Estimate the calls and spend of evaluating `the_plan` (calls under test and judges).

    Judges are estimated on the messages they will be sent (criteria, request, reference answer,
    context), with the answer as long as the variant's `max_tokens` allows.

    Args:
        the_plan: the suites to evaluate.
        price: USD for (model, prompt tokens, completion tokens), or None when unknown.
        models: models requested for this run besides the suites' own (`--models`).
        billed_attempts: the most attempts of one call a provider may bill (RetryPolicy.max_billed_attempts).
        latency_sample: answers may come from the cache, so each suite with a base may call base and
            head again on `latency_sample` of its cases (counted on its longest requests).
    """
    result = Estimate(billed_attempts=billed_attempts)
    judge_model = the_plan.config.judge
    for sp in the_plan.suites:
        repeats = sp.suite.repeats
        if latency_sample and sp.base_prompt is not None:
            for name, prompt, model in sp.variants(models or []):
                if name in ("base", "head"):
                    sizes = sorted((_message_tokens(m) for m in sp.requests(prompt).values()), reverse=True)
                    for size in sizes[: sp.suite.latency_sample]:
                        result.add(model, size, prompt.output_tokens, price)
        for _name, prompt, model in sp.variants(models or []):
            output_tokens = prompt.output_tokens
            requests = sp.requests(prompt)
            for case in sp.evaluated_cases:
                if case.id not in requests:
                    continue
                messages = requests[case.id]
                result.add(model, _message_tokens(messages), output_tokens, price, repeats)
                request = messages[-1]["content"]
                # The head's own exam, when it differs, grades the same answers again.
                for spec in [*sp.suite.graders, *(sp.head_exam.graders if sp.head_exam else [])]:
                    grader = unwrapped(spec)
                    if isinstance(grader, RubricGrader):
                        judged = rubric_messages(grader.criteria, request, "", case.fields, grader.field)
                        judge_in = _message_tokens(judged) + output_tokens
                        result.add(grader.model or judge_model, judge_in, JUDGE_MAX_TOKENS, price, repeats)
                    elif isinstance(grader, HallucinationGrader) and grader.method == "judge":
                        context = context_text(case.fields.get(grader.context_field, ""))
                        judge_in = _message_tokens(hallucination_messages(context, "")) + output_tokens
                        result.add(grader.model or judge_model, judge_in, JUDGE_MAX_TOKENS, price, repeats)
                    elif isinstance(grader, PromptfooAssertionGrader) and grader.field not in case.fields:
                        continue  # a promptfoo assertion slot this case's test does not have
                    elif isinstance(grader, PromptfooAssertionGrader) and grader.embedding_model is not None:
                        reference = str(case.fields[grader.field].get("value"))
                        result.add(grader.embedding_model, output_tokens + _tokens(reference), 0, price, repeats)
                    elif isinstance(grader, ClosedQaGrader | FactualityGrader | PromptfooAssertionGrader):
                        if not uses_judge(grader):
                            continue
                        # The closedqa or factuality prompt (bounded by the longer), the request, the answer
                        # and the reference or criterion.
                        judged = [{"role": "system", "content": FACTUALITY_SYSTEM + FACTUALITY_USER + request}]
                        reference = str(case.fields.get(grader.field) if grader.field else getattr(grader, "value", ""))
                        judge_in = _message_tokens(judged) + output_tokens + _tokens(reference)
                        result.add(
                            getattr(grader, "model", None) or judge_model, judge_in, JUDGE_MAX_TOKENS, price, repeats
                        )
                    elif isinstance(grader, SimilarityGrader):
                        reference = str(case.fields.get(grader.field, ""))
                        result.add(grader.model, output_tokens + _tokens(reference), 0, price, repeats)
    # Judged policies: one call per question for each prompt reviewed, base and head.
    questions = [policy.question for policy in the_plan.config.policies if policy.question]
    for sp in the_plan.suites:
        for prompt in filter(None, (sp.head_prompt, sp.base_prompt)):
            for question in questions:
                result.add(judge_model, _message_tokens(judge_messages(question, prompt)), JUDGE_MAX_TOKENS, price)
    for sp in the_plan.suites:
        _counterfactual_probes(result, sp, judge_model, price)
    return result


def attack_estimate(result: Estimate, plans: Sequence[AttackPlan], price: PriceFn, judge_model: str) -> None:
    """Add the adversarial suites' calls to `result`: each attack sent to base and head, and for a judged
    attack a judge call on each answer (as long as the prompt's `max_tokens` allows)."""
    for plan in plans:
        callers = [plan.head, *([plan.base] if plan.base else [])]
        for probe in plan.probes:
            for caller, messages in zip(callers, (probe.head, probe.base), strict=False):
                assert messages is not None
                result.add(caller.model, _message_tokens(messages), caller.max_tokens, price)
                if probe.test.judge is not None:
                    judged = _message_tokens(attack_judge_messages(probe.test.judge, probe.text, ""))
                    result.add(judge_model, judged + caller.max_tokens, JUDGE_MAX_TOKENS, price)


def _counterfactual_probes(result: Estimate, sp: SuitePlan, judge_model: str, price: PriceFn) -> None:
    """A `fairness.counterfactual` suite's probes: each probed case once per value, on base and head, with a
    judge call per judged grader (sized on the case's own request: a value changes a few words)."""
    settings = sp.suite.fairness.counterfactual if sp.suite.fairness is not None else None
    if settings is None:
        return
    count = len(settings.values) * sp.suite.repeats
    for prompt in filter(None, (sp.head_prompt, sp.base_prompt)):
        requests = sp.requests(prompt)
        for case in probed_cases(sp.evaluated_cases, settings):
            if case.id not in requests:
                continue
            size = _message_tokens(requests[case.id])
            result.add(prompt.model, size, prompt.output_tokens, price, count)
            for spec in sp.suite.graders:
                grader = unwrapped(spec)
                if uses_judge(grader):
                    judge_in = size + prompt.output_tokens + _tokens(str(case.fields))
                    model = getattr(grader, "model", None) or judge_model
                    result.add(model, judge_in, JUDGE_MAX_TOKENS, price, count)
                elif isinstance(grader, SimilarityGrader):
                    result.add(grader.model, prompt.output_tokens + _tokens(str(case.fields)), 0, price, count)
