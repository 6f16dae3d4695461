"""Run pages under load: 8 concurrent views of a 5,000-case run's page while GitHub delivers webhooks.

`evalbot serve` on loopback, beside the fake GitHub of the tests (visibility is asked of it as the
installation); the run is written straight to a SQLite store. Prints the page's size and time, and the
webhook acknowledgement's p50/p99/max while the pages are served (target p99 <= 50 ms).
Needs Redis: it uses BENCH_REDIS_URL (default database 7) and flushes that database at the end.
Usage: python bench/bench_pages.py [--views 8] [--seconds 20] [--cases 5000] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from multiprocessing import Queue, get_context
from multiprocessing.synchronize import Event
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_webhook import SECRET, delivery, free_port  # noqa: E402
from bot.store import migrate, open_store  # noqa: E402
from tests.github.fake_github import FakeGitHub, generate_app_keys  # noqa: E402
from tests.web.fixtures import REPO, seed_run  # noqa: E402

APP_ID = "4242"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
# Characters of each answer: a 5,000-case run's page was 22 MB unpaginated, about 2,200 bytes a case.
ANSWER_CHARS = 1_000
# Kept-alive connections the webhook sender spreads its requests over.
CONNECTIONS = 16


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def view(base: str, page: str, views: int, seconds: float) -> tuple[list[float], int]:
    """`views` closed-loop viewers of `page` for `seconds`: each page's time, and the page's size."""
    times: list[float] = []
    size = 0
    stop_at = time.perf_counter() + seconds

    async def viewer(client: httpx.AsyncClient) -> None:
        nonlocal size
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            response = await client.get(page)
            response.raise_for_status()
            times.append(time.perf_counter() - started)
            size = len(response.content)

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        await asyncio.gather(*(viewer(client) for _ in range(views)))
    return times, size


def viewers_process(
    base: str, page: str, views: int, seconds: float, started: Event, out: Queue[tuple[list[float], int]]
) -> None:
    # The viewers parse megabytes of HTML: in their own process, so that the webhook sender's clock is
    # not held up by them (only the server's is measured).
    started.set()
    out.put(asyncio.run(view(base, page, views, seconds)))


def sender_process(base: str, seconds: float, rate: int, out: Queue[tuple[list[float], list[float]]]) -> None:
    # Away from the fake GitHub's thread too: nothing else runs in the process whose clock is read.
    out.put(asyncio.run(deliver(base, seconds, rate)))


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One request on a kept-alive connection; the response's status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def deliver(base: str, seconds: float, rate: int) -> tuple[list[float], list[float]]:
    """Signed deliveries at `rate` a second, open loop as GitHub sends, and a /healthz twice a second.

    A few lines of HTTP/1.1 over asyncio streams, not httpx: on a loaded machine an HTTP client's own
    CPU time would be measured as the server's latency.
    """
    host, port = urlsplit(base).hostname or "127.0.0.1", urlsplit(base).port or 80
    acks: list[float] = []
    health: list[float] = []
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        idle.put_nowait(await asyncio.open_connection(host, port))

    async def timed(request: bytes, into: list[float], expected: int) -> None:
        reader, writer = await idle.get()
        started = time.perf_counter()
        status = await _exchange(reader, writer, request)
        into.append(time.perf_counter() - started)
        idle.put_nowait((reader, writer))
        assert status == expected, status

    tasks = []
    start, number = time.perf_counter(), 0
    probe = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    while time.perf_counter() - start < seconds:
        body, headers = delivery(number)
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"POST /api/github/webhooks HTTP/1.1\r\nHost: {host}\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        tasks.append(asyncio.create_task(timed(request, acks, 202)))
        if number % (rate // 2 or 1) == 0:
            tasks.append(asyncio.create_task(timed(probe, health, 200)))
        number += 1
        await asyncio.sleep(max(0.0, start + number / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return acks, health


def load(base: str, page: str, views: int, seconds: float, rate: int) -> None:
    spawn = get_context("spawn")
    seen: Queue[tuple[list[float], int]] = spawn.Queue()
    sent: Queue[tuple[list[float], list[float]]] = spawn.Queue()
    started = spawn.Event()
    viewers = spawn.Process(target=viewers_process, args=(base, page, views, seconds, started, seen))
    sender = spawn.Process(target=sender_process, args=(base, seconds, rate, sent))
    viewers.start()
    # Deliveries start once the viewers have (a process takes seconds to import on a loaded machine).
    started.wait()
    sender.start()
    acks, health = sent.get()
    page_times, page_bytes = seen.get()
    viewers.join()
    sender.join()
    print(f"{views} concurrent viewers for {seconds:.0f} s: {len(page_times)} pages of {page_bytes:,} bytes")
    if page_times:
        print(
            f"page time: p50 {percentile(page_times, 0.5):.0f} ms, p99 {percentile(page_times, 0.99):.0f} ms, "
            f"max {max(page_times) * 1000:.0f} ms"
        )
    print(
        f"webhook ack ({len(acks)} deliveries at {rate}/s): p50 {percentile(acks, 0.5):.1f} ms, "
        f"p99 {percentile(acks, 0.99):.1f} ms, max {max(acks) * 1000:.1f} ms"
    )
    print(f"/healthz: p50 {percentile(health, 0.5):.1f} ms, p99 {percentile(health, 0.99):.1f} ms")
    if percentile(acks, 0.99) > 50:
        sys.exit("webhook p99 over 50 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--views", type=int, default=8, help="concurrent page viewers")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--cases", type=int, default=5_000)
    parser.add_argument("--rate", type=int, default=20, help="webhook deliveries per second")
    args = parser.parse_args()
    private_key, public_key = generate_app_keys()
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeGitHub(Path(tmp), public_key, APP_ID).start()
        database = f"sqlite:///{tmp}/bench.db"
        store = open_store(database)
        migrate(store)
        store.note_repository(REPO, 1)
        built = time.perf_counter()
        public_id = seed_run(store, REPO, fake.oauth.repository_id(REPO), args.cases, ANSWER_CHARS)
        store.close()
        print(f"seeded a {args.cases:,}-case run in {time.perf_counter() - built:.1f} s")
        port = free_port()
        env = {
            **os.environ,
            "APP_ID": APP_ID,
            "PRIVATE_KEY": private_key,
            "WEBHOOK_SECRET": SECRET,
            "GITHUB_API_URL": fake.url,
            "REDIS_URL": REDIS_URL,
            "DATABASE_URL": database,
            "SESSION_SECRET": "bench-session-secret-bench-session-secret",
        }
        env.pop("PUBLIC_URL", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stderr=None if os.environ.get("BENCH_SERVER_LOG") else subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{base}/healthz", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            first = httpx.get(f"{base}/runs/{public_id}", timeout=120)
            first.raise_for_status()
            load(base, f"/runs/{public_id}", args.views, args.seconds, args.rate)
        finally:
            server.terminate()
            server.wait()
            fake.stop()
            redis.Redis.from_url(REDIS_URL).flushdb()


if __name__ == "__main__":
    main()
