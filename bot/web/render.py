"""Pages built away from the web process's event loop: run pages in worker processes (a process of
their own, so that a large run's page does not hold the interpreter lock the webhook endpoint needs),
smaller pages in a thread.

Everything here is a plain function of plain values (they cross a process boundary): the store's URL,
the run, the filters, and the template context.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from bot.pipeline.render import pct, seconds, usd
from bot.store import Store, open_store
from bot.store.pages import run_page
from bot.web.markdown import report_html

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
TEMPLATES.filters.update(pct=pct, seconds=seconds, usd=usd)
# Audit events a run page lists (its pull request's newest).
AUDIT_SHOWN = 200

STATUS_LABELS = {
    "regressed": "Regressed (passed on base, fails on head)",
    "fixed": "Fixed (failed on base, passes on head)",
    "both_wrong": "Both wrong",
    "error": "Errors",
    "both_right": "Both right",
    "one_side": "On one side only",
}


# Verdicts of runs without results, as the run page explains them.
ENDED = {
    "running": "it is still running, or its worker stopped (the check run says why)",
    "untrusted": "the pull request waits for a maintainer's /eval (a fork, or an author without write access)",
    "no-policy": "the base branch's .evalbot.yml cannot be read (the check run says why)",
    "github-error": "GitHub refused a request the run needed",
    "retried": "GitHub failed; the job was run again as a new run",
    "crashed": "the evaluation could not finish (the check run says why)",
    "cancelled": "a newer push or the pull request's close stopped it (the check run says why)",
    "rate-limited": "GitHub's rate limit for the installation stopped it (the check run says until when)",
}


_stores: dict[str, Store] = {}


def _store(url: str) -> Store:
    """The worker's own store on `url` (a process opens its connections itself)."""
    if url not in _stores:
        _stores[url] = open_store(url)
    return _stores[url]


def render(name: str, context: dict[str, Any]) -> str:
    return TEMPLATES.get_template(name).render(context)


def run_page_html(
    store_url: str, run_id: int, status: str, category: str, q: str, page: int, context: dict[str, Any]
) -> str | None:
    """The run page of `run_id` (one page of its cases), or None when there is no such run."""
    store = _store(store_url)
    shown = run_page(store, run_id, status=status, category=category, q=q, page=page)
    if shown is None:
        return None
    audit = store.audit_entries(shown.repository, shown.pr, AUDIT_SHOWN) if shown.pr else []
    report = report_html(shown.markdown) if shown.markdown else ""
    return render(
        "run.html",
        {
            **context,
            "run": shown,
            "report": report,
            "audit": audit,
            "status": status,
            "category": category,
            "q": q,
            "statuses": STATUS_LABELS,
            "ended": ENDED,
        },
    )


# Scheduling priority the page builders give up (nice): on a busy machine the web process, which
# acknowledges webhooks, gets the CPU first.
BUILDER_NICENESS = 10


def _lower_priority() -> None:
    os.nice(BUILDER_NICENESS)


def ready() -> bool:
    """Nothing: run in each worker at start, so that its imports are done before the first page."""
    return True


def page_builders(processes: int) -> Executor:
    """Where run pages are built: `processes` worker processes (forkserver: the web process has threads,
    which a fork would copy mid-lock), started now; with 0, a thread of this process."""
    if processes <= 0:
        return ThreadPoolExecutor(max_workers=2, thread_name_prefix="pages")
    pool = ProcessPoolExecutor(max_workers=processes, mp_context=get_context("forkserver"), initializer=_lower_priority)
    # The pool starts a process per task it cannot hand to an idle one: one task each starts them all.
    for _ in range(processes):
        pool.submit(ready)
    return pool
