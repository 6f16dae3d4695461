"""A small OpenAI-compatible server for tests and benchmarks: scripted answers, delays, 429s and 500s.

Tests reach it through litellm over real HTTP (`openai/<name>` with `api_base`), never a mocked
function. Run it alone for a benchmark: `python -m tests.stub_llm --port 8765 --delay 0.5`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.engine.models import LATENCY_SAMPLE_HEADER
from tests.servers import ThreadedServer


@dataclass
class Reply:
    text: str = "ok"
    delay_s: float = 0.0
    prompt_tokens: int = 10
    completion_tokens: int = 5
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the error message of a non-200 answer (default: "stub error <status>")


Handler = Callable[[dict[str, Any]], Reply]


def user_text(body: dict[str, Any]) -> str:
    """The last user message of a chat request."""
    return next((m.get("content") or "" for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


def embed_text(text: str, dims: int = 64) -> list[float]:
    """A deterministic bag-of-words vector: texts that share words point the same way."""
    vector = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()):
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class StubLLM:
    """The server's state: `handler` decides each chat reply; `requests` records every request body."""

    def __init__(self, handler: Handler | None = None):
        self.handler: Handler = handler or (lambda body: Reply())
        self.requests: list[dict[str, Any]] = []
        # Chat requests answered with 200 to a client still connected: what a provider bills. One the
        # client dropped (killed, cancelled) before its answer was ready is not here.
        self.answered: list[dict[str, Any]] = []
        self.answered_at: list[float] = []  # time.monotonic() of each of `answered`
        # Whether each of `answered` was a call evalbot made again only to measure its latency.
        self.answered_latency_sample: list[bool] = []
        self.embedding_requests: list[dict[str, Any]] = []
        self._failures: list[Reply] = []
        # Chat requests being answered now, and the most at once: what a client's concurrency really was.
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.app = self._make_app()
        self.port = 0
        self._http = ThreadedServer(self.app)

    @property
    def answered_under_test(self) -> int:
        """Answered calls, but those made again only to measure latency."""
        return self.answered_latency_sample.count(False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, count: int, status: int, retry_after_s: float | None = None) -> None:
        """Answer the next `count` chat requests with `status` (and a Retry-After header)."""
        headers = {"retry-after": str(retry_after_s)} if retry_after_s is not None else {}
        with self._lock:
            self._failures += [Reply(status=status, headers=headers) for _ in range(count)]

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            if self._failures:
                return self._failures.pop(0)
        return self.handler(body)

    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        @app.post("/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            reply = self._next_reply(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
            finally:
                self.in_flight -= 1
            if reply.status == 200 and not await request.is_disconnected():
                with self._lock:
                    self.answered.append(body)
                    self.answered_at.append(time.monotonic())
                    self.answered_latency_sample.append(LATENCY_SAMPLE_HEADER in request.headers)
            if reply.status != 200:
                message = reply.error or f"stub error {reply.status}"
                error = {"error": {"message": message, "type": "stub", "code": reply.status}}
                return JSONResponse(error, status_code=reply.status, headers=reply.headers)
            return JSONResponse(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "stub"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                    },
                }
            )

        @app.post("/v1/embeddings")
        @app.post("/embeddings")
        async def embeddings(request: Request) -> JSONResponse:
            body = await request.json()
            with self._lock:
                self.embedding_requests.append(body)
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": embed_text(t)} for i, t in enumerate(inputs)]
            usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
            return JSONResponse({"object": "list", "data": data, "model": body.get("model"), "usage": usage})

        return app

    def start(self, port: int = 0) -> StubLLM:
        self._http.start(port)
        self.port = self._http.port
        return self

    def stop(self) -> None:
        self._http.stop()


def held_stub(score: Handler, hold: threading.Event, free_calls: int, hold_s: float, delay_s: float = 0.0) -> StubLLM:
    """A started stub answering as `score` after `delay_s`; while `hold` is set, calls after the first
    `free_calls` are answered only after `hold_s`, so a test breaks or stops a run while no answer is a
    few milliseconds from arriving."""

    def handler(body: dict[str, Any]) -> Reply:
        held = hold.is_set() and len(server.requests) > free_calls
        return replace(score(body), delay_s=hold_s if held else delay_s)

    server = StubLLM(handler).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds before each chat answer")
    args = parser.parse_args()
    stub = StubLLM(lambda body: Reply(text="stub answer", delay_s=args.delay, prompt_tokens=50, completion_tokens=20))
    stub.start(args.port)
    print(f"stub LLM on {stub.base_url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
