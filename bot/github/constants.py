"""Names GitHub and Redis see: check-run names, the comment marker, key prefixes and job ids."""

from __future__ import annotations

import re

# Fixed for branch protection: users mark these as required checks.
EVALS_CHECK = "evalbot/evals"
APPROVAL_CHECK = "evalbot/approval"
# The nightly re-evaluation's check run on the default branch's head, posted when a metric drifted.
DRIFT_CHECK = "evalbot/drift"
# One open issue per drifting suite, found again by this exact title.
DRIFT_ISSUE_TITLE = "evalbot: drift on {suite}"
# Finds the one sticky comment per pull request among everyone's comments.
COMMENT_MARKER = "<!-- evalbot:sticky-report -->"

DELIVERY_KEY_PREFIX = "evalbot:delivery:"
# The head SHA of a pull request and when its delivery arrived: binds a `/eval` to what it saw.
HEAD_KEY = "evalbot:head:{repo}:{pr}"
# What an approval of one evaluated head must know beyond the check's conclusion: inconclusive breaches
# (approving needs a reason) and a rewritten exam, kept as long as a pull request may stay open.
GATE_NOTES_KEY = "evalbot:gate-notes:{repo}:{pr}:{sha}"
GATE_NOTES_TTL_S = 90 * 24 * 3600
# Each open pull request's verdict on a head SHA (hash: pull request number -> verdict), and the lock
# that lets one job at a time publish that SHA's checks from them.
VERDICT_KEY = "evalbot:verdict:{repo}:{sha}"
# A full commit SHA (SHA-1, or SHA-256 in repositories that use it).
COMMIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
VERDICT_LOCK_KEY = "evalbot:verdict-lock:{repo}:{sha}"
# The pull requests each delivery said have a head SHA (hash: number -> base branch): GitHub's list of
# open pull requests can lag a delivery by seconds.
SHA_PULLS_KEY = "evalbot:sha-pulls:{repo}:{sha}"
SHA_PULLS_TTL_S = 90 * 24 * 3600
# Verdicts outlive any review; one that expired is evaluated again, never taken for a pass.
VERDICT_TTL_S = 90 * 24 * 3600
VERDICT_LOCK_TIMEOUT_S = 120
# How long a job asks GitHub again for its pull request when the head it reports is not the job's:
# the API can lag a push by a moment; a head still different after these is a late or repeated delivery.
HEAD_SETTLE_DELAYS_S = (1.0, 2.0, 4.0)
# Refused commands answered per user and repository in a window; past it, a refusal is only logged
# (no reply, no audit record): anyone who can comment could otherwise make the bot write without end.
REFUSALS_KEY = "evalbot:refusals:{repo}:{user}"
REFUSALS_PER_WINDOW = 5
REFUSALS_WINDOW_S = 10 * 60
# `/help` is answered once per user and pull request in this window; asked again, it is only logged.
HELP_KEY = "evalbot:help:{repo}:{pr}:{user}"
HELP_WINDOW_S = 3600
# GitHub caps webhook payloads at 25 MB ("Payload cap", webhook events and payloads docs): anything
# bigger is not GitHub's, and is refused before it is read whole.
MAX_WEBHOOK_BODY_BYTES = 25 * 1024 * 1024
# GitHub redelivers within days at most; a week keeps every duplicate out.
DELIVERY_TTL_S = 7 * 24 * 3600
# A delivery's id is held this long while it is being queued; it is recorded for the week only once
# queued, so a delivery that failed half-way (and Redis with it) is taken again when GitHub redelivers.
DELIVERY_CLAIM_TTL_S = 30
# The head record outlives any review: a command on a pull request whose record is gone is refused.
HEAD_TTL_S = 90 * 24 * 3600

# An evaluation's time cap is planned from its calls (bot/github/worker/liveness.py), within these bounds;
# arq's own timeout is the ceiling plus a margin, so the planned cap always fires first. A killed job
# is not waited out: the watchdog re-runs it once its heartbeat is older than LOST_AFTER_S.
JOB_TIMEOUT_FLOOR_S = 10 * 60
JOB_TIMEOUT_CEILING_S = 3 * 3600
JOB_TIMEOUT_S = JOB_TIMEOUT_CEILING_S + 60
# Jobs that only talk to GitHub (commands, publishing): a killed one is run again after this plus 10 s.
SHORT_JOB_TIMEOUT_S = 5 * 60
JOB_MAX_TRIES = 3
# Running evaluations (hash: arq job id -> heartbeat record), renewed every HEARTBEAT_INTERVAL_S; a
# record older than LOST_AFTER_S is a lost worker, looked for every WATCHDOG_EVERY_S.
HEARTBEATS_KEY = "evalbot:heartbeats"
HEARTBEAT_INTERVAL_S = 10
LOST_AFTER_S = 60
WATCHDOG_EVERY_S = 10
# Each pull request's queued and running evaluations (hash: arq job id -> head SHA), so that a push or a
# close can abort those of older heads; and why a job was aborted (read by the job as it stops, and
# by the watchdog, which must not run it again). Both outlive any evaluation and arq's kept result.
PR_JOBS_KEY = "evalbot:pr-jobs:{repo}:{pr}"
PR_JOBS_TTL_S = 7 * 24 * 3600
SUPERSEDED_KEY = "evalbot:superseded:{job_id}"
SUPERSEDED_TTL_S = 7 * 24 * 3600
# A finished report GitHub did not take (5xx, unreachable), published again by its own job with backoff.
# A failed delivery is asked again at most this many times, and not twice within REDELIVERY_EVERY_S.
MAX_REDELIVERIES = 3
REDELIVERY_EVERY_S = 60
REDELIVERED_KEY = "evalbot:redelivered:{guid}"
# GitHub lists (and redelivers) the app's deliveries of the last three days.
DELIVERY_RETENTION_S = 3 * 24 * 3600
# The newest delivery id the redelivery cron has read: the next run pages down to it, no further.
REDELIVERY_CURSOR_KEY = "evalbot:redelivery:cursor"
# Deliveries whose every attempt so far failed, by GUID: {"id", "tries", "at"} (JSON).
REDELIVERY_PENDING_KEY = "evalbot:redelivery:pending"
OUTBOX_KEY = "evalbot:outbox:{repo}:{pr}:{sha}"
OUTBOX_TTL_S = 24 * 3600
# A job that cannot reach GitHub at all is tried again after this many seconds times its try number.
RETRY_DEFER_S = 30
# Progress updates of the check run while cases run: at least this many seconds apart, and at most
# this many per run (each is a PATCH: GitHub's secondary limits count it five times).
PROGRESS_INTERVAL_S = 10.0
PROGRESS_MAX_UPDATES = 2
# A rate-limited request is retried (up to this many times) while the wait leaves the job this much
# time to finish; a job without a time cap (commands, publishing) waits at most UNCAPPED_WAIT_S.
RATE_LIMIT_RETRIES = 5
RATE_LIMIT_MARGIN_S = 60
UNCAPPED_WAIT_S = 60
# An evaluation waits out a limit in its worker slot only this long; a longer one ends the run, its check
# completed when the installation is let through again: a slot asleep for minutes holds one of
# WORKER_MAX_JOBS while every job of the installation is blocked anyway.
RATE_LIMIT_INLINE_WAIT_S = 30
# Each installation's limiter (bot/github/api/throttle.py), in Redis for every worker: when it is blocked
# until, when its last write was answered, the write in flight and how long it may hold the turn.
THROTTLE_KEY = "evalbot:gh-throttle:{installation}"
THROTTLE_TTL_S = 24 * 3600
WRITE_LEASE_S = 60
# A limit without `retry-after` or `x-ratelimit-remaining: 0` (a bare 429, a secondary-limit 403): GitHub
# asks for at least a minute, then exponentially longer while the limits go on.
SECONDARY_FIRST_WAIT_S = 60
SECONDARY_MAX_WAIT_S = 3600
# GitHub's limits: a check run's output.summary / output.text in bytes of UTF-8 (422 "summary exceeds
# a maximum bytesize of 65535"), an issue's or comment's body in characters (422 "Body is too long
# (maximum is 65536 characters)").
MAX_OUTPUT_BYTES = 65_535
MAX_BODY_CHARS = 65_536


# How often the worker looks for due `schedule:` firings (minutes; a firing runs within this much).
SCHEDULE_TICK_MINUTES = 5


# Each merge group's result, by its commit: a group queued behind it trusts its content only if it passed.
GROUP_RESULT_KEY = "evalbot:merge-group-result:{repo}:{sha}"
GROUP_RESULT_TTL_S = 7 * 24 * 3600
# A group whose parent (the group ahead) is still being checked waits this long between looks at its result.
PARENT_WAIT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


def scheduled_job_id(repo: str, fire_at: float) -> str:
    """One re-evaluation per repository and schedule firing."""
    return f"evalbot:scheduled:{repo}:{int(fire_at)}"


def eval_job_id(repo: str, pr_number: int, head_sha: str) -> str:
    """One evaluation per (repository, pull request, head SHA): arq drops a second enqueue."""
    return f"evalbot:eval:{repo}:{pr_number}:{head_sha}"


# A merge group's branch: GitHub documents the `gh-readonly-queue/<base branch>/` prefix; the rest,
# `pr-<number>-<parent sha>`, is what GitHub sends (octokit's example payload and real queues).
MERGE_QUEUE_BRANCH = re.compile(
    r"gh-readonly-queue/(?P<base>.+)/pr-(?P<pr>[1-9][0-9]*)-(?P<parent>[0-9a-f]{40}|[0-9a-f]{64})"
)


def merge_group_job_id(repo: str, head_sha: str) -> str:
    """One check of a merge group's commit: a redelivery of `checks_requested` is dropped."""
    return f"evalbot:merge-group:{repo}:{head_sha}"


# arq job names queued where the job's function cannot be imported: the web process (webhook.py) does
# not load the evaluation code, and bot/github/state/ sits below the flows. tests/github/test_registry.py
# checks that each names a job of the worker's registry.
EVALUATE_JOB = "evaluate_pull_request"
PUBLISH_HEAD_JOB = "publish_head"
RERUN_HEAD_JOB = "rerun_head"
HANDLE_COMMAND_JOB = "handle_command"
MERGE_GROUP_JOB = "merge_group_checks"
