"""Engine throughput: N cases x 2 variants against the stub server with a fixed 500 ms latency.

Prints wall time against the ideal ceil(2N / concurrency) x 0.5 s, for the evaluation itself and for
the whole `evalbot eval` process (start-up included), with calls/s, CPU seconds per call and peak RSS.
With --compare-promptfoo, runs promptfoo (bench/promptfoo/run.sh) on the same stub and workload,
alternating with evalbot for --rounds rounds, and prints both rows and their ratios. With several sizes
(--cases 200,1000) it runs every size and prints each tool's marginal CPU per call: the CPU between two
sizes over the calls between them, what a call costs once start-up is paid.
Usage: python bench/bench_engine.py [--cases 200[,1000]] [--concurrency 16] [--delay 0.5]
                                    [--compare-promptfoo [--rounds 1]]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", *args], check=True)


def build_repo(repo: Path, cases: int) -> None:
    (repo / "prompts").mkdir(parents=True)
    (repo / "evals").mkdir()
    config = {
        "prices": {"openai/bench": {"input_per_1k": 0.00015, "output_per_1k": 0.0006}},
        "suites": [
            {
                "name": "bench",
                "prompt": "prompts/p.yaml",
                "dataset": "evals/d.jsonl",
                "graders": [{"type": "contains", "field": "expected"}],
            }
        ],
    }
    (repo / ".evalbot.yml").write_text(yaml.safe_dump(config))
    rows = [json.dumps({"id": f"c{i}", "question": f"question {i}", "expected": "stub"}) for i in range(cases)]
    (repo / "evals/d.jsonl").write_text("\n".join(rows) + "\n")
    prompt = {"version": "1.0.0", "model": "openai/bench", "user_prompt_template": "Q: {question}", "max_tokens": 50}
    (repo / "prompts/p.yaml").write_text(yaml.safe_dump(prompt))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "tag", "base")
    prompt.update(version="1.1.0", system_prompt="Be brief.")
    (repo / "prompts/p.yaml").write_text(yaml.safe_dump(prompt))
    git(repo, "commit", "-qam", "head")


@dataclass(frozen=True)
class Row:
    """One tool's run: its own evaluation time, the whole process, CPU seconds and peak RSS."""

    tool: str
    eval_s: float
    process_s: float
    cpu_s: float
    rss_mib: float
    calls: int
    load: float = 0.0  # 1-minute load average as the run started


def run_evalbot(base_url: str, repo: Path, tmp: Path, args: argparse.Namespace) -> Row:
    """`evalbot eval` of this checkout (python -m bot, not whatever `evalbot` is installed) as a subprocess."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "EVALBOT_CACHE_DIR": str(tmp / "cache")}
    # The run is recorded in a fresh SQLite file in the temporary cache directory, wherever the benchmark
    # runs: a DATABASE_URL of the environment (a shared PostgreSQL) would be measured too.
    env.pop("DATABASE_URL", None)
    command = [sys.executable, "-m", "bot", "eval", "--repo", str(repo), "--base", "base", "--format", "json"]
    command += ["--no-cache", "--concurrency", str(args.concurrency), "--api-base", base_url]
    out_path = tmp / "report.json"
    started = time.perf_counter()
    with out_path.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.DEVNULL)
        # wait4 gives this process's own CPU and memory, not the stub server's.
        _pid, status, usage = os.wait4(proc.pid, 0)
    process_s = time.perf_counter() - started
    returncode = os.waitstatus_to_exitcode(status)
    if returncode not in (0, 1):
        sys.exit(f"evalbot failed with exit code {returncode}")
    spend = json.loads(out_path.read_text())["spend"]
    cpu_s = usage.ru_utime + usage.ru_stime
    return Row("evalbot", spend["wall_s"], process_s, cpu_s, usage.ru_maxrss / 1024, spend["http_requests"])


def run_promptfoo(base_url: str, cases: int, args: argparse.Namespace) -> Row:
    """promptfoo on the same workload through bench/promptfoo/run.sh (its line: wall_s, cpu_s, maxrss_mb...)."""
    script = ROOT / "bench" / "promptfoo" / "run.sh"
    proc = subprocess.run(
        ["bash", str(script), base_url, str(cases), str(args.concurrency)], capture_output=True, text=True
    )
    if proc.returncode == 2:
        sys.exit(f"promptfoo is not installed: run bench/promptfoo/install.sh once (needs node and npm)\n{proc.stderr}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("promptfoo ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"promptfoo failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    values = dict(item.split("=", 1) for item in line.split()[1:])
    return Row(
        "promptfoo",
        float(values["eval_s"]),
        float(values["wall_s"]),
        float(values["cpu_s"]),
        float(values["maxrss_mb"]),
        int(values["calls"]),
    )


def start_stub(delay_s: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "tests.stub_llm", "--port", str(port), "--delay", str(delay_s)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "x"}, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return stub, f"http://127.0.0.1:{port}/v1"


def ideal_s(cases: int, args: argparse.Namespace) -> float:
    return float(math.ceil(2 * cases / args.concurrency) * args.delay)


def print_evalbot(row: Row, cases: int, args: argparse.Namespace) -> None:
    ideal = ideal_s(cases, args)
    calls = row.calls
    print(f"calls: {calls} ({cases} cases x 2 variants), concurrency {args.concurrency}, latency {args.delay} s")
    print(f"ideal:                      {ideal:.2f} s")
    print(f"evaluation wall time:       {row.eval_s:.2f} s  ({row.eval_s / ideal:.3f}x ideal)")
    print(f"whole process (with start): {row.process_s:.2f} s  ({row.process_s / ideal:.3f}x ideal)")
    print(f"throughput:                 {calls / row.eval_s:.1f} calls/s")
    per_call_ms = row.cpu_s / calls * 1000
    print(f"CPU of evalbot:             {row.cpu_s:.2f} s in all, {per_call_ms:.1f} ms per call (start-up included)")
    print(f"peak RSS of evalbot:        {row.rss_mib:.0f} MiB")


def mean_of(rows: list[Row], tool: str, attr: str) -> float:
    return statistics.mean(float(getattr(r, attr)) for r in rows if r.tool == tool)


def print_comparison(rows: list[Row], cases: int, args: argparse.Namespace) -> None:
    ideal = ideal_s(cases, args)
    print(f"\n{2 * cases} calls ({cases} cases x 2 prompts), ideal {ideal:.2f} s")
    print(f"{'tool':<10} {'evaluation':>20} {'whole process':>20} {'CPU':>8} {'peak RSS':>10} {'calls':>6} {'load':>5}")
    for row in rows:
        evaluation = f"{row.eval_s:7.2f} s ({row.eval_s / ideal:5.3f}x)"
        process = f"{row.process_s:7.2f} s ({row.process_s / ideal:5.3f}x)"
        print(
            f"{row.tool:<10} {evaluation:>20} {process:>20} {row.cpu_s:6.2f} s {row.rss_mib:6.0f} MiB"
            f" {row.calls:6d} {row.load:5.2f}"
        )
    print("evalbot / promptfoo, mean over rounds (below 1: evalbot ahead):")
    columns = (("evaluation", "eval_s"), ("whole process", "process_s"), ("CPU", "cpu_s"), ("peak RSS", "rss_mib"))
    for label, attr in columns:
        print(f"  {label:<14} {mean_of(rows, 'evalbot', attr) / mean_of(rows, 'promptfoo', attr):.2f}")


def print_marginal(by_size: dict[int, list[Row]], tools: list[str]) -> None:
    """CPU per call between the smallest and the largest size: start-up, the same at both, cancels out."""
    small, large = min(by_size), max(by_size)
    print(f"\nmarginal CPU per call, {2 * small} -> {2 * large} calls (means over rounds):")
    marginal = {}
    for tool in tools:
        cpu = mean_of(by_size[large], tool, "cpu_s") - mean_of(by_size[small], tool, "cpu_s")
        calls = mean_of(by_size[large], tool, "calls") - mean_of(by_size[small], tool, "calls")
        marginal[tool] = cpu / calls * 1000
        print(f"  {tool:<10} {marginal[tool]:6.2f} ms")
    if len(tools) == 2:
        print(f"  evalbot / promptfoo {marginal['evalbot'] / marginal['promptfoo']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default="200", help="cases per run; several sizes comma-separated (200,1000)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--compare-promptfoo", action="store_true", help="run promptfoo on the same stub, alternating")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each tool at each size")
    args = parser.parse_args()
    sizes = sorted({int(n) for n in args.cases.split(",")})
    tools = ["evalbot", "promptfoo"] if args.compare_promptfoo else ["evalbot"]
    load_before = os.getloadavg()

    stub, base_url = start_stub(args.delay)
    by_size: dict[int, list[Row]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            for cases in sizes:
                tmp = Path(tmp_dir) / str(cases)
                repo = tmp / "repo"
                build_repo(repo, cases)
                by_size[cases] = []
                for round_ in range(args.rounds):
                    # Alternating which goes first: a machine warming up or getting busy favours neither.
                    for tool in tools if round_ % 2 == 0 else tools[::-1]:
                        load = os.getloadavg()[0]
                        if tool == "evalbot":
                            row = run_evalbot(base_url, repo, tmp, args)
                        else:
                            row = run_promptfoo(base_url, cases, args)
                        by_size[cases].append(replace(row, load=load))
                        print(f"{2 * cases} calls, round {round_ + 1}: {tool} done", file=sys.stderr)
    finally:
        stub.terminate()
        stub.wait()
    for cases, rows in by_size.items():
        if args.compare_promptfoo:
            print_comparison(rows, cases, args)
        else:
            for row in rows:
                print()
                print_evalbot(row, cases, args)
    if len(sizes) > 1:
        print_marginal(by_size, tools)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print("load average (1, 5, 15 min) before the runs: " + ", ".join(f"{x:.2f}" for x in load_before))
    print("load average (1, 5, 15 min) after the runs: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
