"""No green window: a head whose checks may show `success` is held pending by the web process itself.

Checks live on a commit. A commit green as the head of one pull request stays green when a second pull
request with that head is opened against another base, or the first is retargeted, until a worker
takes the job (seconds when idle, minutes when the queue is full). So the web process, before it
queues the job, posts `evalbot/evals` in progress and `evalbot/approval` `action_required` on the head
whenever the commit has a verdict evalbot published and none against this base. A new commit needs
nothing: with no check run yet, its required checks are already pending.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from githubkit.exception import GitHubException

from bot.github.api.client import installation_client
from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK
from bot.github.context import publisher_for
from bot.github.state.verdicts import finished, for_base, verdicts_on
from bot.pipeline.render import render_template
from bot.settings import Settings

log = structlog.get_logger(__name__)

# The web process answers GitHub within its 10 s: the pending checks get this long, then the job posts.
PENDING_POST_TIMEOUT_S = 5.0


def _can_post(settings: Settings) -> bool:
    return bool(settings.APP_ID and (settings.PRIVATE_KEY or settings.PRIVATE_KEY_PATH))


async def warm_up(settings: Settings) -> None:
    """Load at start-up what githubkit loads on its first request (about 0.8 s: its HTTP transport, the
    installation token's model), so that the first delivery's pending checks are as quick as the next's."""
    if not _can_post(settings):
        return
    from githubkit.compat import type_validate_python
    from githubkit_schemas.latest.models import InstallationToken

    # Only time is at stake: whatever fails here is loaded on first use instead.
    with contextlib.suppress(Exception):
        type_validate_python(InstallationToken, {"token": "-", "expires_at": "2000-01-01T00:00:00Z"})
        async with installation_client(settings, 0):
            pass


async def hold_checks(redis: Any, settings: Settings, payload: dict[str, Any]) -> bool:
    """Post the head's checks pending when it may show `success` without a verdict against this base.

    Returns:
        Whether they were posted.
    """
    pr = payload["pull_request"]
    repo, number = payload["repository"]["full_name"], int(pr["number"])
    sha, base_ref = str(pr["head"]["sha"]), str(pr["base"]["ref"])
    verdicts = await verdicts_on(redis, repo, sha)
    if not verdicts or finished(for_base(verdicts, number, base_ref)):
        # Nothing published on the commit, or a verdict against this very base it shares: no window.
        return False
    if not _can_post(settings):
        log.warning("cannot hold the checks pending: APP_ID and PRIVATE_KEY are not set", repo=repo, pr=number)
        return False
    gh = installation_client(settings, int(payload["installation"]["id"]))
    publisher = publisher_for(settings, gh, repo, number, sha)
    title = f"#{number} → {base_ref}: waiting for its evaluation"
    summary = render_template("pending.md.j2", title=title)
    try:
        async with asyncio.timeout(PENDING_POST_TIMEOUT_S):
            await asyncio.gather(
                publisher.post_completed(APPROVAL_CHECK, "action_required", title, summary),
                publisher.post_in_progress(EVALS_CHECK, title, summary),
            )
    except (GitHubException, TimeoutError) as exc:
        # The job posts them when it starts: the window stays open only as long as GitHub is down.
        log.warning("cannot hold the checks pending", repo=repo, pr=number, error=type(exc).__name__)
        return False
    return True
