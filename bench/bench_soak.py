"""Soak: 50 pull requests over 5 minutes at 2 `evalbot worker` processes, one of them killed (SIGKILL)
every minute and started again, as a supervisor would.

A private Redis (append-only file on), the fake GitHub API and the stub model (0.5 s per answer) of the
tests. Pull request i changes suite i's prompt (20 cases, evalbot's default `min_cases`: 40 calls of
its own). Prints the checks
completed with the right conclusion (target 50/50), duplicate sticky comments (target 0), model calls
paid twice (target 0), runs re-started by the watchdog, and how long the checks took.
Usage: python bench/bench_soak.py [--prs 50] [--minutes 5] [--cases 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from arq import create_pool
from arq.connections import RedisSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_worker import REPO, build_repo  # noqa: E402
from bot.github.constants import EVALS_CHECK, eval_job_id  # noqa: E402
from tests.faults.cluster import Cluster, billed_twice  # noqa: E402
from tests.stub_llm import Reply, StubLLM, user_text  # noqa: E402


async def enqueue(redis_url: str, number: int, head: str) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prs", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.5, help="stub latency, seconds")
    parser.add_argument("--drain", type=float, default=300, help="seconds to wait for the last checks")
    args = parser.parse_args()

    stub = StubLLM(lambda body: Reply(text=f"stub answer to {user_text(body)}", delay_s=args.delay)).start()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        base, heads = build_repo(repo, args.prs, args.cases)
        cluster = Cluster(Path(tmp), repo, stub, EVALBOT_CONCURRENCY="4")
        cluster.github.pulls = {number: (base, head) for number, head in enumerate(heads, start=1)}
        workers = [cluster.start_worker(), cluster.start_worker()]
        span_s = args.minutes * 60
        started = time.monotonic()
        arrived: dict[str, float] = {}
        done: dict[str, float] = {}
        kills = 0
        killed_at: list[float] = []
        try:
            while len(done) < len(heads) and time.monotonic() - started < span_s + args.drain:
                now = time.monotonic() - started
                due = min(len(heads), int(now / (span_s / len(heads))) + 1)
                for number in range(len(arrived) + 1, due + 1):
                    asyncio.run(enqueue(cluster.redis_server.url(0), number, heads[number - 1]))
                    arrived[heads[number - 1]] = time.monotonic()
                if now >= 60 * (kills + 1) and now <= span_s:
                    victim = workers[kills % 2]
                    victim.send_signal(signal.SIGKILL)
                    killed_at.append(time.monotonic())
                    victim.wait()
                    workers[kills % 2] = cluster.start_worker()
                    kills += 1
                for head in heads:
                    if head not in done and cluster.completed(head) is not None:
                        done[head] = time.monotonic()
                time.sleep(0.5)
            time.sleep(3)  # the last sticky comments follow their checks
            right = sum(1 for head in heads if (cluster.completed(head) or {}).get("conclusion") == "success")
            duplicates = sum(max(0, len(cluster.sticky_comments(n)) - 1) for n in range(1, len(heads) + 1))
            missing = sum(1 for n in range(1, len(heads) + 1) if not cluster.sticky_comments(n))
            reruns = sum(cluster.titles(head).count("Worker lost, re-running") for head in heads)
            runs = sum(len(cluster.github.runs_named(EVALS_CHECK, head)) for head in heads)
            waits = sorted(done[h] - arrived[h] for h in done)
        finally:
            cluster.close()
            stub.stop()

    print(f"{args.prs} pull requests over {args.minutes:g} min, 2 workers, {kills} SIGKILLs (one a minute)")
    print(f"checks completed:        {len(done)}/{args.prs} ({right} with the right conclusion, success)")
    print(f"evals check runs:        {runs} (a re-run reuses an open one)")
    print(f"sticky comments:         {duplicates} duplicate, {missing} missing")
    repeated = billed_twice(stub)
    print(f"repeated paid calls:     {len(repeated)} (of {len(stub.answered)} answered)")
    if repeated:
        # How long before the kill that cut it off each repeated call's first answer was made.
        before = sorted(min((k - t[0] for k in killed_at if k >= t[0]), default=-1.0) for t in repeated.values())
        print(f"  first answered before its worker's SIGKILL by: {', '.join(f'{b * 1000:.0f} ms' for b in before)}")
    print(f"re-run by the watchdog:  {reruns}")
    if waits:
        print(f"arrival to check:        median {statistics.median(waits):.0f} s, max {waits[-1]:.0f} s")
    print(json.dumps({"completed": len(done), "duplicates": duplicates, "repeated": len(repeated)}))


if __name__ == "__main__":
    main()
