"""The worker under load: 5 pull requests x 1,000 cases arriving at once at one `evalbot worker`.

A real Redis (a private `redis-server`), the fake GitHub API of the tests, and the stub model answering
after 500 ms with a provider limit of 20 requests/s shared by every job (429 with `Retry-After: 1`
beyond it). Each pull request changes one suite's prompt: 1,000 cases x 2 variants = 2,000 calls.
Prints calls/s against the limit (target >= 90%), failed cases (target 0), GitHub requests per pull
request, the worker's peak RSS (target <= 400 MiB) and when each pull request's check completed.
Usage: python bench/bench_worker.py [--prs 5] [--cases 1000] [--limit 20] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from arq import create_pool
from arq.connections import RedisSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.github.constants import EVALS_CHECK, eval_job_id  # noqa: E402
from tests.github.fake_github import FakeGitHub, generate_app_keys  # noqa: E402
from tests.redis_server import PrivateRedis, _free_port  # noqa: E402
from tests.stub_llm import Reply, StubLLM, user_text  # noqa: E402

APP_ID = "4242"
REPO = "acme/bench"


class RateLimitedProvider:
    """The stub's answers: 500 ms each, at most `limit` requests accepted in any 1 s window, else a 429."""

    def __init__(self, limit: int, delay_s: float):
        self.limit = limit
        self.delay_s = delay_s
        self.accepted: collections.deque[float] = collections.deque()
        self.accepted_at: list[float] = []
        self.answered_cases: set[str] = set()
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        now = time.monotonic()
        with self._lock:
            while self.accepted and self.accepted[0] <= now - 1.0:
                self.accepted.popleft()
            if len(self.accepted) >= self.limit:
                self.refused += 1
                return Reply(status=429, headers={"retry-after": "1"})
            self.accepted.append(now)
            self.accepted_at.append(now)
            # Which variant and case: the system prompt tells base from head, the user text the case.
            self.answered_cases.add(json.dumps(body["messages"], sort_keys=True))
        return Reply(text=f"stub answer to {user_text(body)}", delay_s=self.delay_s, prompt_tokens=50)


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def prompt(version: str, system: str) -> str:
    spec = {"version": version, "model": "openai/bench", "system_prompt": system}
    spec |= {"user_prompt_template": "Q: {question}", "max_tokens": 50, "temperature": 0}
    return yaml.safe_dump(spec)


def build_repo(repo: Path, prs: int, cases: int) -> tuple[str, list[str]]:
    """One suite per pull request on main; pull request i changes suite i's prompt. Returns base and heads."""
    (repo / "prompts").mkdir(parents=True)
    (repo / "evals").mkdir()
    suites = []
    for i in range(prs):
        suites.append(
            {
                "name": f"s{i}",
                "prompt": f"prompts/p{i}.yaml",
                "dataset": f"evals/d{i}.jsonl",
                "graders": [{"type": "contains", "field": "expected"}],
            }
        )
        rows = [json.dumps({"id": f"c{j}", "question": f"s{i} question {j}", "expected": "stub"}) for j in range(cases)]
        (repo / f"evals/d{i}.jsonl").write_text("\n".join(rows) + "\n")
        (repo / f"prompts/p{i}.yaml").write_text(prompt("1.0.0", "v1"))
    config = {
        "prices": {"openai/bench": {"input_per_1k": 0.00015, "output_per_1k": 0.0006}},
        # The stub's latency is the same for both variants; the gate here is accuracy.
        "thresholds": {"latency_p95_increase_pct": 1000},
        "suites": suites,
    }
    (repo / ".evalbot.yml").write_text(yaml.safe_dump(config))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    heads = []
    for i in range(prs):
        git(repo, "checkout", "-q", "-b", f"pr{i}", base)
        (repo / f"prompts/p{i}.yaml").write_text(prompt("1.1.0", "v2"))
        git(repo, "commit", "-qam", f"pr {i}")
        heads.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "checkout", "-q", "main")
    return base, heads


async def enqueue(redis_url: str, heads: list[str]) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        for number, head in enumerate(heads, start=1):
            await pool.enqueue_job(
                "evaluate_pull_request",
                _job_id=eval_job_id(REPO, number, head),
                repo=REPO,
                installation_id=1,
                pr_number=number,
                head_sha=head,
            )
    finally:
        await pool.aclose()


def completed_at(github: FakeGitHub, heads: list[str]) -> dict[str, float]:
    done = {}
    for head in heads:
        runs = github.runs_named(EVALS_CHECK, head)
        if runs and runs[-1].get("status") == "completed":
            done[head] = time.monotonic()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prs", type=int, default=5)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=20, help="provider limit, requests per second")
    parser.add_argument("--delay", type=float, default=0.5, help="stub latency, seconds")
    parser.add_argument("--concurrency", type=int, default=10, help="EVALBOT_CONCURRENCY of the worker")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    private_key, public_key = generate_app_keys()
    provider = RateLimitedProvider(args.limit, args.delay)
    redis_server = PrivateRedis()
    stub = StubLLM(provider).start()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        base, heads = build_repo(repo, args.prs, args.cases)
        github = FakeGitHub(repo, public_key, APP_ID).start()
        github.pulls = {number: (base, head) for number, head in enumerate(heads, start=1)}
        env = {
            **os.environ,
            "APP_ID": APP_ID,
            "PRIVATE_KEY": private_key,
            "GITHUB_API_URL": github.url,
            "REDIS_URL": redis_server.url(0),
            "EVALBOT_API_BASE": stub.base_url,
            "EVALBOT_CONCURRENCY": str(args.concurrency),
            "EVALBOT_CACHE_DIR": str(Path(tmp) / "cache"),
            "OPENAI_API_KEY": "sk-bench",
            "WORKER_METRICS_PORT": str(_free_port()),
        }
        env.pop("DATABASE_URL", None)  # runs recorded in SQLite in the temporary cache directory, as everywhere
        worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        asyncio.run(enqueue(redis_server.url(0), heads))
        done: dict[str, float] = {}
        try:
            while len(done) < len(heads) and time.monotonic() - started < args.timeout:
                time.sleep(0.5)
                done = {**completed_at(github, heads), **done}
                if worker.poll() is not None:
                    sys.exit(f"the worker exited early with code {worker.returncode}")
        finally:
            worker.send_signal(signal.SIGTERM)
            _pid, _status, usage = os.wait4(worker.pid, 0)
            github.stop()
            stub.stop()
            redis_server.stop()

    calls = len(provider.accepted_at)
    span_s = provider.accepted_at[-1] - provider.accepted_at[0] + args.delay if calls else 0.0
    expected = args.prs * args.cases * 2
    rate = calls / span_s if span_s else 0.0
    print(f"{args.prs} pull requests x {args.cases} cases x 2 variants = {expected} calls, arriving at once")
    print(f"provider: {args.delay} s per answer, limit {args.limit} requests/s; worker concurrency {args.concurrency}")
    print(f"calls/s:               {rate:.1f} ({rate / args.limit:.0%} of the limit) over {span_s:.0f} s")
    print(f"429s from the limit:   {provider.refused}")
    print(f"failed cases:          {expected - len(provider.answered_cases)}")
    print(
        f"GitHub requests:       {len(github.requests) / args.prs:.0f} per pull request ({len(github.requests)} in all)"
    )
    print(f"worker peak RSS:       {usage.ru_maxrss / 1024:.0f} MiB")
    print(f"worker CPU:            {usage.ru_utime + usage.ru_stime:.1f} s")
    for number, head in enumerate(heads, start=1):
        at = done.get(head)
        print(
            f"check of #{number} completed after {at - started:.0f} s" if at else f"check of #{number}: not completed"
        )


if __name__ == "__main__":
    main()
