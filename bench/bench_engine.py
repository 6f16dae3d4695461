"""Engine throughput: 200 cases x 2 variants against the stub server with a fixed 500 ms latency.

Prints wall time against the ideal ceil(400 / concurrency) x 0.5 s, for the evaluation itself and for
the whole `evalbot eval` process (start-up included), with calls/s, CPU seconds per call and peak RSS.
Usage: python bench/bench_engine.py [--cases 200] [--concurrency 16] [--delay 0.5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.5)
    args = parser.parse_args()

    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "tests.stub_llm", "--port", str(port), "--delay", str(args.delay)], cwd=ROOT
    )
    try:
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "x"}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            build_repo(repo, args.cases)
            env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "EVALBOT_CACHE_DIR": str(Path(tmp) / "cache")}
            command = ["evalbot", "eval", "--repo", str(repo), "--base", "base", "--format", "json", "--no-cache"]
            command += ["--concurrency", str(args.concurrency), "--api-base", f"http://127.0.0.1:{port}/v1"]
            out_path = Path(tmp) / "report.json"
            started = time.perf_counter()
            with out_path.open("w") as out:
                proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.DEVNULL)
                # wait4 gives this process's own CPU and memory, not the stub server's.
                _pid, status, usage = os.wait4(proc.pid, 0)
            process_s = time.perf_counter() - started
            returncode = os.waitstatus_to_exitcode(status)
            stdout = out_path.read_text()
    finally:
        stub.terminate()
        stub.wait()
    if returncode not in (0, 1):
        sys.exit(f"evalbot failed with exit code {returncode}")
    spend = json.loads(stdout)["spend"]
    calls = spend["http_requests"]
    cpu_s = usage.ru_utime + usage.ru_stime
    ideal_s = math.ceil(2 * args.cases / args.concurrency) * args.delay
    print(f"calls: {calls} ({args.cases} cases x 2 variants), concurrency {args.concurrency}, latency {args.delay} s")
    print(f"ideal:                      {ideal_s:.2f} s")
    print(f"evaluation wall time:       {spend['wall_s']:.2f} s  ({spend['wall_s'] / ideal_s:.3f}x ideal)")
    print(f"whole process (with start): {process_s:.2f} s  ({process_s / ideal_s:.3f}x ideal)")
    print(f"throughput:                 {calls / spend['wall_s']:.1f} calls/s")
    print(
        f"CPU of evalbot:             {cpu_s:.2f} s in all, {cpu_s / calls * 1000:.1f} ms per call (start-up included)"
    )
    print(f"peak RSS of evalbot:        {usage.ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
