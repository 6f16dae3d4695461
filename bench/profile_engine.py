"""Where a call's CPU goes: `evalbot eval` under cProfile on bench_engine.py's workload (every thread).

Runs `python -m bot eval --no-cache` of this checkout on N cases x 2 variants against the stub server,
with a profiler in each thread of the evalbot process timing CPU (time.thread_time), and prints its self
time per package (per call, in microseconds) and the functions with the most self and cumulative time.
cProfile slows what it measures severalfold, evenly enough for shares; CPU figures come from
bench_engine.py.
Usage: python bench/profile_engine.py [--cases 1000] [--concurrency 16] [--out /tmp/evalbot.prof] [--top 25]
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

from bench_engine import ROOT, build_repo, start_stub  # noqa: E402

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


def package(filename: str) -> str:
    """A profile entry's package: `bot.engine`, `litellm`, `asyncio`... from its file name."""
    if filename.startswith("~") or filename == "<string>":
        return "builtins"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if str(ROOT) in filename:
        rel = path.relative_to(ROOT).parts
        return ".".join(rel[:2]).removesuffix(".py") if rel[0] == "bot" else rel[0]
    folder = parts[-2] if len(parts) > 1 else ""
    return folder if folder in {"asyncio", "json", "concurrent", "logging"} else "stdlib"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "evalbot.prof"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--report-only", action="store_true", help="print the profile already at --out")
    args = parser.parse_args()
    if not args.report_only:
        profile(args)
    report(args)


def profile(args: argparse.Namespace) -> None:
    stub, base_url = start_stub(args.delay)
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            build_repo(tmp / "repo", args.cases)
            env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "EVALBOT_CACHE_DIR": str(tmp / "cache")}
            env.pop("DATABASE_URL", None)
            command = [sys.executable, "-c", WRAPPER, args.out, "eval", "--repo", str(tmp / "repo"), "--base", "base"]
            command += ["--format", "json", "--no-cache", "--concurrency", str(args.concurrency)]
            command += ["--api-base", base_url]
            subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)
    finally:
        stub.terminate()
        stub.wait()
    dumps = sorted(Path(args.out).parent.glob(Path(args.out).name + ".*"))
    stats = pstats.Stats(*map(str, dumps))
    for dump in dumps:
        dump.unlink()
    stats.dump_stats(args.out)


def report(args: argparse.Namespace) -> None:
    stats = pstats.Stats(args.out)
    calls = 2 * args.cases
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[package(filename)] += tottime
    total = sum(by_package.values())
    print(f"{calls} calls, {total:.2f} s profiled (all threads; profiling overhead included)")
    print("self time per package, per call:")
    for name, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {name:<28} {seconds / calls * 1e6:8.0f} us  {seconds / total:6.1%}")
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(f"profile: {args.out} (python -m pstats {args.out})")


if __name__ == "__main__":
    main()
