"""Prometheus metrics of the web process (deliveries) and the worker (jobs, model calls, spend)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "evalbot_webhook_deliveries_total", "Webhook deliveries by event and outcome", ["event", "outcome"]
)
JOBS_ENQUEUED = Counter("evalbot_jobs_enqueued_total", "Evaluation jobs enqueued")
JOBS = Counter("evalbot_jobs_total", "Evaluation jobs finished, by verdict", ["result"])
JOB_SECONDS = Histogram(
    "evalbot_job_duration_seconds", "Evaluation job duration", buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800)
)
MODEL_CALLS = Counter("evalbot_model_calls_total", "Model calls under test (cached ones included)")
SPEND_USD = Counter("evalbot_model_spend_usd_total", "Model spend in USD, calls under test and judges")
REDELIVERIES = Counter(
    "evalbot_webhook_redeliveries_total", "Failed webhook deliveries the worker asked GitHub to send again", ["outcome"]
)
# GitHub's quota is per installation and hour: what evalbot spends of it, and what one evaluation costs.
GITHUB_REQUESTS = Counter(
    "evalbot_github_requests_total", "Requests to GitHub's API, by kind (get, post, patch, token)", ["kind"]
)
GITHUB_RATE_LIMITED = Counter("evalbot_github_rate_limited_total", "GitHub answers refusing a request for a rate limit")
GITHUB_REQUESTS_PER_RUN = Histogram(
    "evalbot_github_requests_per_run", "GitHub requests one evaluation made", buckets=(5, 10, 15, 20, 30, 50, 100, 200)
)
