"""Model calls: the one module that imports litellm, and the one place that owns the retry policy."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from bot.engine.cache import ResponseCache, cache_key
from bot.engine.concurrency import FairLimiter, shared_limiter
from bot.errors import BudgetExhausted, ModelCallError

log = structlog.get_logger(__name__)

# Sent with a call that measures latency again (the answer is already known): a provider's logs, and a
# test counting what was paid twice, can tell it from a call under test.
LATENCY_SAMPLE_HEADER = "X-Evalbot-Latency-Sample"

Price = tuple[float, float]  # USD per 1K input tokens, per 1K output tokens


@dataclass(frozen=True)
class Completion:
    """A model answer with what it cost to get: latency and cost are those measured when it was made."""

    text: str
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: no price known for the model
    cached: bool = False
    # The answer took more than one attempt (a retry after a 429, a 5xx, a timeout): its latency is the
    # last attempt's, but a retried call says the provider was struggling then.
    retried: bool = False
    # Read from the response cache: its latency was measured when it was made, another day. (An answer
    # shared with an identical call in flight is `cached` too, but measured now.)
    stored: bool = False


@dataclass
class CallStats:
    """Counts over one client's life: what the report says about the run's own calls."""

    calls: int = 0
    answered: int = 0  # calls that got an answer, from the provider or the cache
    cached: int = 0
    http_requests: int = 0
    retries: int = 0
    errors: int = 0
    spend_usd: float = 0.0
    unpriced: int = 0  # calls made to a model with no known price: spend_usd leaves them out


@dataclass
class SpendLimit:
    """A run's budget, shared by all of its clients: once their spend reaches it, no model call starts."""

    budget_usd: float
    spent_usd: float = 0.0

    @property
    def reached(self) -> bool:
        return self.spent_usd >= self.budget_usd


@dataclass(frozen=True)
class RetryPolicy:
    """Retry 429 (honouring Retry-After), 5xx, timeouts and connection errors with jittered backoff.

    A 429 or 5xx is answered without generating anything, which providers do not bill. A timeout or a
    dropped connection may come after the provider generated (and billed) the answer: at most
    `max_billed_attempts` attempts of a call end that way or in an answer, so that is the worst case of
    billed attempts per call the budget estimate counts.
    """

    max_attempts: int = 5
    max_billed_attempts: int = 2
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 120.0

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            # The provider said when: waiting less only earns another 429.
            return min(retry_after_s, self.max_delay_s)
        # "Full jitter" (AWS architecture blog): spreads retries of many concurrent calls apart.
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))


T = TypeVar("T")


@dataclass
class _Attempt:
    """One attempt of a model call: the provider's slot it takes for its request, whose turn that is,
    the budget checked in the slot, and what it measured."""

    limiter: FairLimiter
    owner: object
    limit: SpendLimit | None
    sent: bool = False
    refused: BudgetExhausted | None = None
    latency_s: float | None = None

    async def request(self, send: Callable[[], Awaitable[T]]) -> T:
        """`send()` in one of the provider's slots, timed, unless the spend reached the budget."""
        async with self.limiter.slot(self.owner):
            # Checked in the slot, just before the request: calls queued for a slot when the spend
            # reached the budget never start.
            if self.limit is not None and self.limit.reached:
                self.refused = BudgetExhausted(f"the run's spend reached its budget of ${self.limit.budget_usd:g}")
                raise self.refused
            self.sent = True
            started = time.perf_counter()
            response = await send()
            self.latency_s = time.perf_counter() - started
            return response


# The attempt under way in this task, for the HTTP client (`_slotted_http_client`) that litellm sends it
# through: litellm offers no hook around the request itself, and the client it is given is evalbot's.
_attempt: ContextVar[_Attempt | None] = ContextVar("evalbot_model_call_attempt", default=None)


@functools.cache
def _slotted_http_client() -> type[Any]:
    """The OpenAI SDK's aiohttp client taking the provider's slot around each request alone.

    litellm spends most of a call's CPU before and after its request (building it, pricing and logging
    the response): held outside the slot, that work overlaps other calls' waits instead of keeping a
    slot from the next request, and the latency measured is the request's own.
    """
    import openai

    class SlottedHttpClient(openai.DefaultAioHttpClient):
        async def send(self, *args: Any, **kwargs: Any) -> Any:
            attempt = _attempt.get()
            if attempt is None:  # the client is ModelClient's own: a request outside its calls is a bug
                raise RuntimeError("a model request outside ModelClient's calls: no provider slot to take")
            return await attempt.request(functools.partial(super().send, *args, **kwargs))

    return SlottedHttpClient


_import_lock = threading.Lock()
_module: Any = None


def _litellm() -> Any:
    """litellm, imported and set up once, by whichever thread asks first (see `import_in_background`)."""
    global _module
    with _import_lock:
        if _module is None:
            # Without this, importing litellm fetches its price list from the network (DESIGN.md §8).
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            # The import allocates ~200 MiB of objects that all live as long as the process: the
            # collector's passes over them while they pile up are a third of the import's CPU (~1.8 s).
            collecting = gc.isenabled()
            gc.disable()
            try:
                import litellm

                litellm.suppress_debug_info = True
                litellm.telemetry = False
                # litellm's first call imports and builds what every later call uses (about 0.4 s of
                # CPU). A mock answer does it with no request, so the first real call does not carry it.
                litellm.completion(
                    model="openai/warm-up", messages=[{"role": "user", "content": "-"}], mock_response="-"
                )
            finally:
                if collecting:
                    gc.enable()
            # Out of the collector's way: no garbage collection during the run walks them again.
            gc.freeze()
            _module = litellm
    return _module


def import_in_background() -> None:
    """Start importing litellm (4-5 s) in a thread, so that reading git, config and datasets overlaps it."""
    if _module is None:
        threading.Thread(target=_litellm, name="import-litellm", daemon=True).start()


def _retry_after_s(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "litellm_response_headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from model providers; fall back to backoff


def _may_be_billed(exc: BaseException) -> bool:
    """Whether a failed attempt may have been generated, and billed, before it failed."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError):
        return True
    if getattr(exc, "status_code", None) == 408:
        return True
    return type(exc).__name__ in {"Timeout", "APIConnectionError", "APITimeoutError"}


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError):
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status == 429 or status == 408 or status >= 500
    name = type(exc).__name__
    return name in {"Timeout", "APIConnectionError", "APITimeoutError", "ServiceUnavailableError"}


def price_usd(model: str, prompt_tokens: int, completion_tokens: int, prices: dict[str, Price]) -> float | None:
    """USD for a call's tokens, from `prices` first, else litellm's price map; None when neither knows."""
    if model in prices:
        per_1k_in, per_1k_out = prices[model]
        return (prompt_tokens * per_1k_in + completion_tokens * per_1k_out) / 1000
    return _litellm_cost_usd(model, prompt_tokens, completion_tokens)


# litellm resolves the model's price entry on every look-up (about 1 ms); calls of one suite repeat
# the same token counts, so most look-ups are answered here.
@functools.lru_cache(maxsize=16_384)
def _litellm_cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    try:
        prompt_cost, completion_cost = _litellm().cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # litellm raises plain Exception for an unmapped model
        return None
    return float(prompt_cost + completion_cost)


class ModelClient:
    """Chat completions and embeddings with bounded concurrency, retries, a cache and cost accounting.

    Args:
        cache: where answers are kept; None to always call.
        prices: per-model prices that override litellm's map (`prices:` in `.evalbot.yml`).
        concurrency: model calls in flight at once, per provider (the part of the model name before "/"),
            shared with every other client of the process at the same setting (the worker's jobs).
        retry: the retry policy.
        api_base: an OpenAI-compatible base URL for every call (else litellm's own variables apply).
        limit: the run's budget, shared with its other clients: a call that would start after the spend
            reached it raises BudgetExhausted instead.
        owner: whose turn a call is when the provider's calls queue (clients of one job pass the same);
            each client on its own by default.
    """

    def __init__(
        self,
        cache: ResponseCache | None = None,
        prices: dict[str, Price] | None = None,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        api_base: str | None = None,
        limit: SpendLimit | None = None,
        owner: object | None = None,
    ):
        self.cache = cache
        self.prices = prices or {}
        self.retry = retry or RetryPolicy()
        self.api_base = api_base
        self.limit = limit
        self.stats = CallStats()
        self.concurrency = concurrency
        self._owner = self if owner is None else owner
        # One budget of calls in flight per provider: a slow provider fills its own slots, not the others'.
        self._limiters: dict[str, FairLimiter] = {}
        self._in_flight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._call_args: dict[str, dict[str, Any]] = {}
        self._openai: Any = None
        self._litellm = _litellm()

    async def aclose(self) -> None:
        """Close the HTTP connections this client opened."""
        if self._openai is not None:
            await self._openai.close()
            self._openai = None

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: list[dict[str, Any]] | None = None,
        sample: int = 0,
        latency_sample: bool = False,
    ) -> Completion:
        """One chat completion; `sample` tells repeats apart so each gets its own cache entry;
        `latency_sample` marks a call made again only to measure its latency (LATENCY_SAMPLE_HEADER).

        Raises:
            ModelCallError: when the call still fails after the retry policy.
        """
        params: dict[str, Any] = {"messages": messages, "sample": sample}
        for key, value in (("temperature", temperature), ("max_tokens", max_tokens), ("tools", tools)):
            if value is not None:
                params[key] = value

        async def call() -> dict[str, Any]:
            request = {k: v for k, v in params.items() if k != "sample"}
            if latency_sample:
                request["extra_headers"] = {LATENCY_SAMPLE_HEADER: "1"}
            response, latency_s, attempts = await self._with_retries(model, self._litellm.acompletion, request)
            message = response.choices[0].message
            text = message.content or ""
            if not text and getattr(message, "tool_calls", None):
                text = str([call.model_dump() for call in message.tool_calls])
            usage = getattr(response, "usage", None)
            return {
                "text": text,
                "latency_s": latency_s,
                "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
                "retried": attempts > 1,
            }

        data, cached, stored = await self._cached("chat", model, params, call)
        # Priced now, not when cached: prices may have changed since, and are the caller's to set.
        cost = self._account(model, data["prompt_tokens"], data["completion_tokens"], cached)
        self.stats.answered += 1
        return Completion(
            data["text"],
            data["latency_s"],
            data["prompt_tokens"],
            data["completion_tokens"],
            cost,
            cached,
            bool(data.get("retried", False)),
            stored,
        )

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embedding vectors for `texts`, in order.

        Raises:
            ModelCallError: when the call still fails after the retry policy.
        """

        async def call() -> dict[str, Any]:
            response, latency_s, _ = await self._with_retries(model, self._litellm.aembedding, {"input": texts})
            vectors = [item["embedding"] if isinstance(item, dict) else item.embedding for item in response.data]
            usage = getattr(response, "usage", None)
            return {"vectors": vectors, "latency_s": latency_s, "prompt_tokens": getattr(usage, "prompt_tokens", 0)}

        data, cached, _ = await self._cached("embedding", model, {"input": texts}, call)
        self._account(model, int(data.get("prompt_tokens") or 0), 0, cached)
        self.stats.answered += 1
        return list(data["vectors"])

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Cost from `prices:` or litellm's price map; None when neither knows the model."""
        return price_usd(model, prompt_tokens, completion_tokens, self.prices)

    def _account(self, model: str, prompt_tokens: int, completion_tokens: int, cached: bool) -> float | None:
        """Price a call; add it to the spend when it was made now (a cached answer costs nothing)."""
        cost = self.cost_usd(model, prompt_tokens, completion_tokens)
        if not cached:
            if cost is None:
                self.stats.unpriced += 1
            else:
                self.stats.spend_usd += cost
                if self.limit is not None:
                    self.limit.spent_usd += cost
        return cost

    async def _cached(
        self, kind: str, model: str, params: dict[str, Any], call: Callable[[], Awaitable[dict[str, Any]]]
    ) -> tuple[dict[str, Any], bool, bool]:
        """The answer, whether this client did not call for it (`cached`), and whether it came from the
        response cache rather than from an identical call in flight (`stored`)."""
        self.stats.calls += 1
        key = cache_key(kind, model, params)
        if self.cache is not None:
            hit = await self.cache.get(key)
            if hit is not None:
                self.stats.cached += 1
                return hit, True, True
        # Identical requests in flight at once (a prompt the change left alone) share one call.
        pending = self._in_flight.get(key)
        if pending is not None:
            self.stats.cached += 1
            return await asyncio.shield(pending), True, False
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            data = await call()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it; no "never retrieved" warning
            self.stats.errors += 1
            raise
        finally:
            del self._in_flight[key]
        future.set_result(data)
        if self.cache is not None:
            await self.cache.set(key, data)
        return data, False, False

    def _limiter(self, model: str) -> FairLimiter:
        provider = _provider(model)
        if provider not in self._limiters:
            self._limiters[provider] = shared_limiter(provider, self.concurrency)
        return self._limiters[provider]

    def _model_args(self, model: str) -> dict[str, Any]:
        """What every call to `model` carries besides the request: its HTTP client and its price."""
        args = self._call_args.get(model)
        if args is None:
            args = {}
            one_in, one_out = self.cost_usd(model, 1000, 0), self.cost_usd(model, 0, 1000)
            if one_in is not None and one_out is not None:
                # Given the price, litellm prices its own response from it instead of looking the
                # model up in its map on every call (a third of its CPU per call).
                args.update(input_cost_per_token=one_in / 1000, output_cost_per_token=one_out / 1000)
            client = self._openai_client(model)
            if client is not None:
                args["client"] = client
            else:
                args["api_base"] = self.api_base
            self._call_args[model] = args
        return args

    def _openai_client(self, model: str) -> Any:
        """The one OpenAI SDK client for the models litellm sends through it; None for other providers.

        Built before the first request, so the first wave goes out at full concurrency without each
        call building a client of its own, and on aiohttp, as litellm's own clients are (less CPU per
        call than httpx's default transport); it takes the provider's slot around the request alone.
        None when no key is set: litellm then says what is missing.
        """
        try:
            _, provider, api_key, _ = self._litellm.get_llm_provider(model=model, api_base=self.api_base)
        except Exception:  # an unknown provider: litellm's own error comes with the call
            return None
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if provider != "openai" or not api_key:
            return None
        if self._openai is None:
            import openai

            base_url = self.api_base or os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL")
            self._openai = openai.AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                timeout=self.retry.timeout_s,
                http_client=_slotted_http_client()(),
            )
        return self._openai

    async def _with_retries(
        self, model: str, method: Callable[..., Awaitable[Any]], request: dict[str, Any]
    ) -> tuple[Any, float, int]:
        """The response, the latency of the attempt that gave it, and the attempts it took."""
        model_args = self._model_args(model)
        call = functools.partial(
            method,
            model=model,
            timeout=self.retry.timeout_s,
            # The OpenAI client's and litellm's own retries off: this loop is the policy.
            max_retries=0,
            num_retries=0,
            **model_args,
            **request,
        )
        last: BaseException | None = None
        billed = 0
        for number in range(self.retry.max_attempts):
            attempt = _Attempt(self._limiter(model), self._owner, self.limit)
            token = _attempt.set(attempt)
            try:
                # Through evalbot's HTTP client, the slot is taken around the request alone; through
                # litellm's own clients (other providers), around the whole call.
                response = await (call() if "client" in model_args else attempt.request(call))
                # Either way the answer came through `attempt.request`, which timed it.
                assert attempt.latency_s is not None
                return response, attempt.latency_s, number + 1
            except Exception as exc:
                if attempt.refused is not None:  # as raised in the slot: litellm wraps what its client raises
                    raise attempt.refused from None
                last = exc
                billed += _may_be_billed(exc)
                if not _is_retryable(exc) or billed >= self.retry.max_billed_attempts:
                    break
            finally:
                _attempt.reset(token)
                self.stats.http_requests += attempt.sent
            if number + 1 < self.retry.max_attempts:
                delay = self.retry.delay_s(number, _retry_after_s(last) if last else None)
                self.stats.retries += 1
                log.info("model call retry", model=model, attempt=number + 1, delay_s=round(delay, 3), error=str(last))
                await asyncio.sleep(delay)
        raise ModelCallError(_describe(model, last)) from last


def _provider(model: str) -> str:
    """litellm's provider prefix of a model name ("openai/gpt-4o" -> "openai")."""
    return model.split("/", 1)[0] if "/" in model else "default"


# What a failed call is reported as: the status and a fixed description, never the provider's error
# body (it can echo the request, the key or internal URLs, and the report is posted publicly).
_STATUS_TEXT = {
    400: "request refused",
    401: "authentication refused",
    403: "permission refused",
    404: "model or endpoint not found",
    408: "timed out",
    413: "request too large",
    422: "request refused",
    429: "rate limited",
}


def _describe(model: str, exc: BaseException | None) -> str:
    name = type(exc).__name__
    # litellm gives these a status too (408, 500): what happened is clearer than the number.
    if isinstance(exc, asyncio.TimeoutError | TimeoutError) or name in {"Timeout", "APITimeoutError"}:
        return f"{model}: timed out"
    if isinstance(exc, ConnectionError) or name == "APIConnectionError":
        return f"{model}: connection failed"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        text = _STATUS_TEXT.get(status, "provider error" if status >= 500 else "request refused")
        return f"{model}: HTTP {status}: {text}"
    return f"{model}: call failed ({name if exc else 'unknown error'})"
