"""A run's cost estimated before any model call, to refuse one above `budget.max_cost_usd`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.pipeline.changes import Plan
from bot.pipeline.config import HallucinationGrader, RubricGrader, SimilarityGrader

# Without a tokenizer per provider (tiktoken would fetch its tables from the network), a token is
# counted as 4 characters of English text: the usual rule of thumb, within about 20% for prose.
CHARS_PER_TOKEN = 4
# Output tokens assumed when a prompt sets no max_tokens, and for a judge's JSON verdict.
DEFAULT_MAX_TOKENS = 512
JUDGE_OUTPUT_TOKENS = 300
# The judges' own instructions, around the request and answer they are shown.
JUDGE_PROMPT_TOKENS = 150

PriceFn = Callable[[str, int, int], float | None]


@dataclass
class Estimate:
    """Upper-bound estimate: every answer as long as max_tokens allows."""

    calls: int = 0
    usd: float = 0.0
    unpriced_models: list[str] = field(default_factory=list)

    def add(self, model: str, prompt_tokens: int, completion_tokens: int, price: PriceFn, count: int = 1) -> None:
        self.calls += count
        cost = price(model, prompt_tokens, completion_tokens)
        if cost is None:
            if model not in self.unpriced_models:
                self.unpriced_models.append(model)
        else:
            self.usd += cost * count


def _tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def estimate(the_plan: Plan, price: PriceFn, models: list[str] | None = None) -> Estimate:
    """Estimate the calls and spend of evaluating `the_plan` (calls under test and judges).

    Args:
        the_plan: the suites to evaluate.
        price: USD for (model, prompt tokens, completion tokens), or None when unknown.
        models: models requested for this run besides the suites' own (`--models`).
    """
    result = Estimate()
    judge_model = the_plan.config.judge
    for sp in the_plan.suites:
        for _name, prompt, model in sp.variants(models or []):
            output_tokens = prompt.spec.max_tokens or DEFAULT_MAX_TOKENS
            for case in sp.cases:
                messages = prompt.messages(case.fields)
                prompt_tokens = sum(_tokens(m["content"]) for m in messages)
                result.add(model, prompt_tokens, output_tokens, price, sp.suite.repeats)
                # The head's own exam, when it differs, grades the same answers again.
                for grader in [*sp.suite.graders, *(sp.head_exam.graders if sp.head_exam else [])]:
                    answer_and_request = _tokens(messages[-1]["content"]) + output_tokens
                    if isinstance(grader, RubricGrader):
                        judge_in = JUDGE_PROMPT_TOKENS + answer_and_request
                        result.add(grader.model or judge_model, judge_in, JUDGE_OUTPUT_TOKENS, price, sp.suite.repeats)
                    elif isinstance(grader, HallucinationGrader) and grader.method == "judge":
                        context = str(case.fields.get(grader.context_field, ""))
                        judge_in = JUDGE_PROMPT_TOKENS + _tokens(context) + output_tokens
                        result.add(grader.model or judge_model, judge_in, JUDGE_OUTPUT_TOKENS, price, sp.suite.repeats)
                    elif isinstance(grader, SimilarityGrader):
                        reference = str(case.fields.get(grader.field, ""))
                        result.add(grader.model, output_tokens + _tokens(reference), 0, price, sp.suite.repeats)
    return result
