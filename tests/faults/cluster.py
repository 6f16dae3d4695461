"""Real `evalbot worker` processes on a private Redis, with the fake GitHub API and the stub model served
from this process over HTTP: what the fault tests and the soak benchmark break."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import redis

from bot.github.constants import COMMENT_MARKER, EVALS_CHECK, HEARTBEATS_KEY
from bot.store import database_url, migrate, open_store
from tests.github.fake_github import FakeGitHub, generate_app_keys
from tests.redis_server import PrivateRedis, _free_port
from tests.stub_llm import StubLLM

ROOT = Path(__file__).resolve().parents[2]
APP_ID = "4242"


def wait_until(done: Callable[[], bool], within_s: float, what: str) -> float:
    """Seconds until `done()` held; fails after `within_s`."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def billed_twice(stub: StubLLM) -> dict[str, list[float]]:
    """Requests the stub answered (to a client still there) more than once, paid twice: when each
    answer was made (time.monotonic()). A call made again only to measure latency (a run whose answers
    came from the cache) is paid on purpose and left out."""
    seen: dict[str, list[float]] = {}
    for body, at, again in zip(stub.answered, stub.answered_at, stub.answered_latency_sample, strict=True):
        if again:
            continue
        key = json.dumps({"model": body.get("model"), "messages": body.get("messages")}, sort_keys=True)
        seen.setdefault(key, []).append(at)
    return {key: times for key, times in seen.items() if len(times) > 1}


class Cluster:
    """A private Redis (append-only file on, as deployments should run it), the fake GitHub on `repo_root`,
    and worker subprocesses running this checkout."""

    def __init__(self, tmp: Path, repo_root: Path, stub: StubLLM, **env: str):
        self.tmp = tmp
        self.stub = stub
        private_key, public_key = generate_app_keys()
        self.redis_server = PrivateRedis(appendonly=True)
        self.redis = redis.Redis.from_url(self.redis_server.url(0), socket_timeout=5)
        self.github = FakeGitHub(repo_root, public_key, APP_ID).start()
        database = f"sqlite:///{tmp / 'evalbot.db'}"
        # Migrated once here: workers starting side by side must not race to create the tables.
        store = open_store(database_url(database, tmp))
        migrate(store)
        store.close()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "APP_ID": APP_ID,
            "PRIVATE_KEY": private_key,
            "WEBHOOK_SECRET": "webhook-secret",
            "GITHUB_API_URL": self.github.url,
            "REDIS_URL": self.redis_server.url(0),
            "EVALBOT_API_BASE": stub.base_url,
            "EVALBOT_CACHE_DIR": str(tmp / "cache"),
            "OPENAI_API_KEY": "sk-test",
            "DATABASE_URL": database,
            # As in tests/github: a second between writes would only make these runs longer.
            "GITHUB_WRITE_SPACING_S": "0.01",
            **env,
        }
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("wb")
        env = {**self.env, "WORKER_METRICS_PORT": str(_free_port())}
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.workers.append(worker)
        self._logs.append(log)
        return worker

    def running_on(self) -> dict[str, int]:
        """The worker process id of each running evaluation (arq job id -> pid), from its heartbeat."""
        beats = self.redis.hgetall(HEARTBEATS_KEY)
        return {key.decode(): int(json.loads(raw)["token"].split(":")[1]) for key, raw in beats.items()}

    def worker(self, pid: int) -> subprocess.Popen[bytes]:
        return next(w for w in self.workers if w.pid == pid)

    def completed(self, head_sha: str) -> dict[str, Any] | None:
        runs = self.github.runs_named(EVALS_CHECK, head_sha)
        return runs[-1] if runs and runs[-1]["status"] == "completed" else None

    def sticky_comments(self, pr: int) -> list[dict[str, Any]]:
        return [c for c in self.github.comments.values() if c["issue"] == pr and COMMENT_MARKER in c["body"]]

    def titles(self, head_sha: str) -> list[str]:
        """Every title evalbot gave its evals check runs on `head_sha`, in order."""
        ids = {r["id"] for r in self.github.runs_named(EVALS_CHECK, head_sha)}
        return [
            body["output"]["title"]
            for method, path, body in self.github.bodies
            if method == "PATCH"
            and path.rsplit("/", 1)[-1].isdigit()
            and int(path.rsplit("/", 1)[-1]) in ids
            and "output" in body
        ]

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {i}\n" + (self.tmp / f"worker-{i}.log").read_text(errors="replace")[-4000:]
            for i in range(len(self.workers))
        )

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
        for log in self._logs:
            log.close()
        self.github.stop()
        self.redis.close()
        self.redis_server.stop()
