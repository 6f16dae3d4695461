"""Where a call's CPU goes: `evalbot eval` under cProfile on bench_engine.py's workload (every thread).

Runs `python -m bot eval --no-cache` of this checkout at two sizes (200 and 1,000 cases x 2 variants)
against the stub server, with a profiler in each thread of the evalbot process timing CPU
(time.thread_time), and prints the self time per group of packages of one call (the difference
between the sizes over the calls between them: start-up cancels out), then the functions with the
most self and cumulative time. cProfile slows what it measures severalfold, evenly enough for shares;
CPU figures come from bench_engine.py.
Usage: python bench/profile_engine.py [--cases 200,1000] [--concurrency 16] [--out /tmp/evalbot.prof] [--top 25]
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import ROOT, build_repo, start_stub

# Run as `python -c` in the profiled process: a profiler per thread (cProfile sees only the thread that
# enabled it), all dumped when evalbot leaves through os._exit (which skips atexit and finally blocks).
WRAPPER = """
import cProfile, os, sys, threading, time
out = sys.argv.pop(1)
profiles = []
def start(*_):
    # Each thread's own CPU time, not wall time: waits (the event loop's poll, idle threads, the GIL
    # under a loaded machine) cost nothing.
    profile = cProfile.Profile(time.thread_time)
    profiles.append(profile)
    profile.enable()
threading.setprofile(start)
real_exit = os._exit
def dump(code):
    for i, profile in enumerate(profiles):
        profile.disable()
        profile.dump_stats(f"{out}.{i}")
    real_exit(code)
os._exit = dump
start()
sys.argv[0] = "evalbot"
from bot.cli import main
main()
"""


# Where a package's time is reported: what an evalbot call is made of, by who owns the code.
GROUPS = {
    "litellm": "litellm",
    "openai": "HTTP client (openai SDK, httpx2, aiohttp)",
    "httpx2": "HTTP client (openai SDK, httpx2, aiohttp)",
    "httpx": "HTTP client (openai SDK, httpx2, aiohttp)",
    "aiohttp": "HTTP client (openai SDK, httpx2, aiohttp)",
    "httpcore": "HTTP client (openai SDK, httpx2, aiohttp)",
    "yarl": "HTTP client (openai SDK, httpx2, aiohttp)",
    "multidict": "HTTP client (openai SDK, httpx2, aiohttp)",
    "pydantic": "pydantic (litellm's and the SDK's models)",
    "pydantic_core": "pydantic (litellm's and the SDK's models)",
    "asyncio": "asyncio event loop",
    "concurrent": "threads (litellm's executor hop)",
    "threading": "threads (litellm's executor hop)",
    "queue": "threads (litellm's executor hop)",
    "bot.engine": "evalbot engine (calls, cache, grading, statistics)",
    "bot.pipeline": "evalbot pipeline (plan, compare, report)",
    "bot.store": "evalbot store (recording the run)",
    "sqlalchemy": "evalbot store (recording the run)",
    "alembic": "evalbot store (recording the run)",
}


def package(filename: str) -> str:
    """A profile entry's package: `bot.engine`, `litellm`, `asyncio`... from its file name."""
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if str(ROOT) in filename:
        rel = path.relative_to(ROOT).parts
        return ".".join(rel[:2]).removesuffix(".py") if rel[0] == "bot" else rel[0]
    folder = parts[-2] if len(parts) > 1 else ""
    if folder in {"asyncio", "json", "concurrent", "logging"}:
        return folder
    return path.stem if path.stem in {"threading", "queue"} else "stdlib"


# Where a thread waits (for work, for the network): CPU time the profiler books there is its own.
WAITS = ("SimpleQueue' objects>", "'poll' of 'select.epoll'", "acquire' of '_thread.lock", "time.sleep")


def by_group(stats: pstats.Stats) -> dict[str, float]:
    """Self time per group; a C function's (`~`) counts for the group of the function that called it."""
    entries = stats.stats  # type: ignore[attr-defined]
    groups: dict[str, float] = defaultdict(float)
    for (filename, _line, name), (_cc, _nc, tottime, _ct, callers) in entries.items():
        if any(wait in name for wait in WAITS):
            continue
        if filename != "~":
            groups[GROUPS.get(package(filename), "other")] += tottime
            continue
        for (caller_file, _l, _n), edge in callers.items():
            groups["other" if caller_file == "~" else GROUPS.get(package(caller_file), "other")] += edge[2]
    return groups


# What a call's CPU is spent on, by operation: (label, file name ending, function), cumulative time.
OPERATIONS = [
    ("litellm's acompletion, whole (HTTP client included)", "litellm/utils.py", "wrapper_async"),
    ("  of which the openai SDK's request (HTTP client)", "openai/_base_client.py", "request"),
    ("litellm's completion() set-up, in its executor thread", "litellm/main.py", "completion"),
    ("litellm's success logging (a task of its own)", "litellm_logging.py", "async_success_handler"),
    ("evalbot: grading", "bot/engine/runner.py", "_grade"),
    ("evalbot: cache key", "bot/engine/cache.py", "cache_key"),
    ("evalbot: progress", "bot/cli.py", "progress"),
    ("evalbot: comparison and statistics", "bot/pipeline/compare.py", "compare_suite"),
    ("evalbot: JSON report", "bot/pipeline/render.py", "render_json"),
    ("evalbot: recording the run (store)", "bot/store/store.py", "record_run"),
]


def operations(stats: pstats.Stats) -> dict[str, float]:
    entries = stats.stats  # type: ignore[attr-defined]
    found: dict[str, float] = defaultdict(float)
    for (filename, _line, name), (_cc, _nc, _tt, cumtime, _callers) in entries.items():
        for label, file_end, function in OPERATIONS:
            if name == function and filename.endswith(file_end):
                found[label] += cumtime
    return found


def profile(cases: int, args: argparse.Namespace) -> pstats.Stats:
    """`evalbot eval` of `cases` cases under a profiler per thread; their stats merged."""
    out = f"{args.out}.{cases}"
    stub, base_url = start_stub(args.delay)
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            build_repo(tmp / "repo", cases)
            env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "EVALBOT_CACHE_DIR": str(tmp / "cache")}
            env.pop("DATABASE_URL", None)
            command = [sys.executable, "-c", WRAPPER, out, "eval", "--repo", str(tmp / "repo"), "--base", "base"]
            command += ["--format", "json", "--no-cache", "--concurrency", str(args.concurrency)]
            command += ["--api-base", base_url]
            subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)
    finally:
        stub.terminate()
        stub.wait()
    dumps = sorted(Path(out).parent.glob(Path(out).name + ".*"))
    stats = pstats.Stats(*map(str, dumps))
    for dump in dumps:
        dump.unlink()
    stats.dump_stats(out)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="200,1000", help="two sizes: the profile of a call is their difference")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "evalbot.prof"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--report-only", action="store_true", help="print the profiles already at --out.N")
    args = parser.parse_args()
    small, large = sorted(int(n) for n in args.cases.split(","))
    if args.report_only:
        profiles = {n: pstats.Stats(f"{args.out}.{n}") for n in (small, large)}
    else:
        profiles = {n: profile(n, args) for n in (small, large)}
    groups = {n: by_group(stats) for n, stats in profiles.items()}
    calls = 2 * (large - small)
    per_call = {g: (groups[large].get(g, 0.0) - groups[small].get(g, 0.0)) / calls for g in groups[large]}
    total = sum(per_call.values())
    print(f"CPU of a call, profiled ({2 * small} and {2 * large} calls: the difference over {calls} calls;")
    print("cProfile inflates every figure severalfold: read the shares)")
    for group, seconds in sorted(per_call.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<48} {seconds * 1e6:7.0f} us  {seconds / total:6.1%}")
    print(f"  {'all':<48} {total * 1e6:7.0f} us")
    ops = {n: operations(stats) for n, stats in profiles.items()}
    print("by operation (cumulative, per call):")
    for label, _file, _function in OPERATIONS:
        seconds = (ops[large].get(label, 0.0) - ops[small].get(label, 0.0)) / calls
        print(f"  {label:<52} {seconds * 1e6:7.0f} us  {seconds / total:6.1%}")
    profiles[large].sort_stats("tottime").print_stats(args.top)
    profiles[large].sort_stats("cumulative").print_stats(args.top)
    print(f"profiles: {args.out}.{small}, {args.out}.{large} (python -m pstats FILE)")


if __name__ == "__main__":
    main()
