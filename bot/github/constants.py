"""Names GitHub and Redis see: check-run names, the comment marker, key prefixes and job ids."""

from __future__ import annotations

# Fixed for branch protection: users mark these as required checks.
EVALS_CHECK = "evalbot/evals"
APPROVAL_CHECK = "evalbot/approval"
# Finds the one sticky comment per pull request among everyone's comments.
COMMENT_MARKER = "<!-- evalbot:sticky-report -->"

DELIVERY_KEY_PREFIX = "evalbot:delivery:"
APPROVAL_KEY = "evalbot:approval:{repo}:{pr}"
# The head SHA of a pull request and when its delivery arrived: binds a `/eval` to what it saw.
HEAD_KEY = "evalbot:head:{repo}:{pr}"
AUDIT_STREAM = "evalbot:audit:{repo}"
# What an approval of one evaluated head must know beyond the check's conclusion: inconclusive breaches
# (approving needs a reason) and a rewritten exam, kept as long as a pull request may stay open.
GATE_NOTES_KEY = "evalbot:gate-notes:{repo}:{pr}:{sha}"
GATE_NOTES_TTL_S = 90 * 24 * 3600
# Each open pull request's verdict on a head SHA (hash: pull request number -> verdict), and the lock
# that lets one job at a time publish that SHA's checks from them.
VERDICT_KEY = "evalbot:verdict:{repo}:{sha}"
VERDICT_LOCK_KEY = "evalbot:verdict-lock:{repo}:{sha}"
# Verdicts outlive any review; one that expired is evaluated again, never taken for a pass.
VERDICT_TTL_S = 90 * 24 * 3600
VERDICT_LOCK_TIMEOUT_S = 120
# Audit records kept per repository (approximate trimming, as Redis streams do it cheaply).
AUDIT_MAX_ENTRIES = 100_000
# Characters kept of each text an audit record holds (reasons, command text, logins), and of its
# details as a whole: a comment can be 65,536 characters long, and anyone can write one.
AUDIT_FIELD_CHARS = 1_000
AUDIT_DETAILS_CHARS = 16_000
# Reads take the newest records only: at most this many are returned, and at most AUDIT_SCAN_ENTRIES
# newest ones are looked through for one pull request's.
AUDIT_READ_LAST = 1_000
AUDIT_SCAN_ENTRIES = 10_000
# An approval outlives any pull request's review; its key goes when the pull request has been quiet
# this long (a later /approve sets it again).
APPROVAL_TTL_S = 90 * 24 * 3600
# Refused commands answered per user and repository in a window; past it, a refusal is only logged
# (no reply, no audit record): anyone who can comment could otherwise make the bot write without end.
REFUSALS_KEY = "evalbot:refusals:{repo}:{user}"
REFUSALS_PER_WINDOW = 5
REFUSALS_WINDOW_S = 10 * 60
# GitHub caps webhook payloads at 25 MB ("Payload cap", webhook events and payloads docs): anything
# bigger is not GitHub's, and is refused before it is read whole.
MAX_WEBHOOK_BODY_BYTES = 25 * 1024 * 1024
# GitHub redelivers within days at most; a week keeps every duplicate out.
DELIVERY_TTL_S = 7 * 24 * 3600

# A suite of a few hundred cases on a slow provider takes minutes; a killed job is re-run only after
# this plus arq's 10 s lock slack, so keep it near the longest real evaluation.
JOB_TIMEOUT_S = 30 * 60
JOB_MAX_TRIES = 3
# A job that cannot reach GitHub at all is tried again after this many seconds times its try number.
RETRY_DEFER_S = 30
# Seconds between progress updates of the check run while cases run.
PROGRESS_INTERVAL_S = 2.0
# GitHub's limit on a check run's output.summary / output.text and on a comment body.
MAX_TEXT_CHARS = 65_535


def eval_job_id(repo: str, pr_number: int, head_sha: str) -> str:
    """One evaluation per (repository, pull request, head SHA): arq drops a second enqueue."""
    return f"evalbot:eval:{repo}:{pr_number}:{head_sha}"
