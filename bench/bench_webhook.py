"""Webhook ack latency: signed pull_request deliveries at a fixed rate against `evalbot serve` on loopback.

Prints p50/p99/max of the time to the 202 and checks that every delivery was enqueued exactly once.
Needs Redis (it uses database 13 and flushes it). Usage: python bench/bench_webhook.py [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "github-webhooks" / "pull_request.opened.json"
SECRET = "bench-secret"
REDIS_URL = "redis://127.0.0.1:6379/13"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delivery(number: int) -> tuple[bytes, dict[str, str]]:
    payload = json.loads(FIXTURE.read_text())
    payload["pull_request"]["head"]["sha"] = hashlib.sha1(str(number).encode()).hexdigest()
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "pull_request",
        # Unique across runs: the web process dedupes delivery ids it has seen.
        "X-GitHub-Delivery": f"bench-{number}-{time.time_ns()}",
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    }
    return body, headers


async def load(url: str, rate: int, seconds: int) -> list[float]:
    total = rate * seconds
    prepared = [delivery(i) for i in range(total)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def send(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> None:
        started = time.perf_counter()
        response = await client.post(url, content=body, headers=headers)
        latencies.append(time.perf_counter() - started)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=50)) as client:
        tasks = []
        start = time.perf_counter()
        for i, (body, headers) in enumerate(prepared):
            # Open-loop pacing: send on schedule whatever the answers, as GitHub does.
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(client, body, headers)))
        await asyncio.gather(*tasks)
    print(f"statuses: {statuses}")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=100, help="deliveries per second")
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    store = redis.Redis.from_url(REDIS_URL)
    store.flushdb()
    port = free_port()
    env = {**os.environ, "WEBHOOK_SECRET": SECRET, "REDIS_URL": REDIS_URL, "PORT": str(port)}
    server = subprocess.Popen(["evalbot", "serve", "--host", "127.0.0.1"], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        latencies = sorted(asyncio.run(load(f"http://127.0.0.1:{port}/api/github/webhooks", args.rate, args.seconds)))
    finally:
        server.terminate()
        server.wait()
    enqueued = store.zcard("arq:queue")
    store.flushdb()
    sent = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(sent - 1, int(q * sent))] * 1000

    print(f"sent {sent} signed deliveries at {args.rate}/s for {args.seconds} s; enqueued {enqueued}")
    print(f"ack latency: p50 {pct(0.50):.1f} ms, p99 {pct(0.99):.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    if enqueued != sent:
        sys.exit("enqueued count differs from sent count")


if __name__ == "__main__":
    main()
