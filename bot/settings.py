"""Process settings from the environment, with the names GitHub App tooling uses (DESIGN.md §3)."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=True, extra="ignore")

    APP_ID: str | None = None
    PRIVATE_KEY: str | None = None
    PRIVATE_KEY_PATH: Path | None = None
    WEBHOOK_SECRET: str | None = None
    GITHUB_API_URL: str = "https://api.github.com"
    REDIS_URL: str = "redis://localhost:6379/0"
    PORT: int = 8000
    PUBLIC_URL: str | None = None
    # Where the response cache lives when Redis does not answer.
    EVALBOT_CACHE_DIR: Path = Path.home() / ".cache" / "evalbot"
    # Durable records (runs, results, the audit trail): `postgresql://user@host:port/db` as deployments
    # write it; unset, a SQLite file in EVALBOT_CACHE_DIR (`evalbot eval` on a laptop).
    DATABASE_URL: str | None = None
    # One OpenAI-compatible endpoint for every model call (else litellm's own variables apply).
    EVALBOT_API_BASE: str | None = None
    # Model calls in flight per provider in one worker process, shared fairly by the jobs it runs.
    EVALBOT_CONCURRENCY: int = 8
    # Jobs one worker process runs at once (arq's `max_jobs`). Every running evaluation polls GitHub
    # from one installation's hourly quota: more jobs per worker do not make that quota larger.
    WORKER_MAX_JOBS: int = 10
    # Seconds between an installation's writes (POST, PATCH, PUT, DELETE), across every worker: GitHub's
    # best practices ask for at least one between mutative requests (secondary rate limits).
    GITHUB_WRITE_SPACING_S: float = 1.0
    # The worker serves its own Prometheus metrics here (jobs, model calls, spend).
    WORKER_METRICS_PORT: int = 9100
    # Where the worker's metrics server listens: this host only unless a deployment opens it up.
    WORKER_METRICS_HOST: str = "127.0.0.1"
    # On SIGTERM the worker takes no new job and lets running ones finish for this long, then hands
    # them back to the queue (their answers stay in the response cache) for another worker.
    WORKER_SHUTDOWN_GRACE_S: int = 25
    # A model call's expected latency (retries included), which sizes each evaluation's time cap:
    # calls x this / EVALBOT_CONCURRENCY, between a floor and a ceiling.
    EVALBOT_EXPECTED_CALL_S: float = 10.0
    # Failed webhook deliveries (answered 5xx: Redis down, a deploy) this recent are redelivered by
    # the worker's cron; GitHub never redelivers by itself, and keeps deliveries three days (a longer
    # setting is cut to that). Older ones are left.
    REDELIVERY_LOOKBACK_S: int = 3 * 24 * 3600
    # When set, `GET /metrics` needs `Authorization: Bearer <METRICS_TOKEN>` (401 otherwise).
    METRICS_TOKEN: str | None = None
    # Run and suite pages: "Sign in with GitHub" through the App's user authorization (OAuth web flow).
    GITHUB_CLIENT_ID: str | None = None
    GITHUB_CLIENT_SECRET: str | None = None
    # Where GitHub's web pages are (the OAuth authorize and access_token endpoints): not the API's host.
    GITHUB_WEB_URL: str = "https://github.com"
    # Signs the sign-in cookie and encrypts the user tokens kept server-side; at least 32 bytes (shorter is
    # refused at start). Unset, a random one per process (sessions end when the process does).
    SESSION_SECRET: str | None = None
    # Worker processes that build run pages (a 5,000-case run's page takes a CPU for a while; in a
    # process of its own it does not hold up the webhook endpoint). 0: a thread of the web process.
    WEB_PAGE_PROCESSES: int = 2
    # Records one repository's feedback token may post to `POST /api/feedback` per minute (then 429).
    FEEDBACK_RATE_PER_MINUTE: int = 60

    @field_validator("PRIVATE_KEY")
    @classmethod
    def _unescape_newlines(cls, value: str | None) -> str | None:
        # PaaS secret stores often keep a PEM on one line with literal "\n".
        return value.replace("\\n", "\n") if value else value


def get_settings() -> Settings:
    """Read the settings from the environment now (tests change it between calls)."""
    return Settings()
