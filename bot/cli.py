"""The `evalbot` command. Heavy imports (litellm, the store) happen inside commands so `--help` is instant."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bot.errors import EvalbotError, InputError

EXIT_PASS, EXIT_GATE_FAILED, EXIT_INPUT = 0, 1, 2


def _configure_logging(verbose: bool) -> None:
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO if verbose else logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _fail(exc: EvalbotError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_INPUT)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evalbot")
def cli() -> None:
    """evalbot: evaluate prompts, model configs and datasets base-vs-head, as CI does on a pull request."""


class _LazyProgress:
    """A rich progress bar on a terminal, shown only once a run has taken more than a second."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        # Asked once, not on every answer (a system call each).
        self._tty = sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int, cached: int) -> None:
        if self._progress is None:
            if not self._tty or time.monotonic() - self._started < 1:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("evaluating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("calls, {task.fields[cached]} from cache"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("eval", total=total, cached=0)
        self._progress.update(self._task, completed=done, cached=cached)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@cli.command("eval")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option("--base", required=True, help="Base revision (branch, tag or SHA): policy and the 'before' prompts.")
@click.option(
    "--head",
    default=None,
    help="Head revision: suites, datasets, 'after' prompts. Default: the working tree, committed or not.",
)
@click.option("--suite", "suites", multiple=True, help="Evaluate this suite whether or not it changed (repeatable).")
@click.option("--all", "run_all", is_flag=True, help="Evaluate every suite whether or not it changed.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report to this file.")
@click.option("--api-base", envvar="EVALBOT_API_BASE", help="OpenAI-compatible base URL for every model call.")
@click.option("--models", "models", help="Comma-separated models to run the head prompt on, side by side (e.g. a,b).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True, help="Per provider.")
@click.option("--no-cache", is_flag=True, help="Call every model, even for answers in the response cache.")
@click.option("-v", "--verbose", is_flag=True, help="Log retries and cache decisions to stderr.")
def eval_command(
    repo: Path,
    base: str,
    head: str | None,
    suites: tuple[str, ...],
    run_all: bool,
    fmt: str,
    output: Path | None,
    api_base: str | None,
    models: str | None,
    concurrency: int,
    no_cache: bool,
    verbose: bool,
) -> None:
    """Evaluate the suites a change between BASE and HEAD touches; exit 0 pass, 1 gate failed, 2 bad input."""
    from bot.engine.models import import_in_background

    import_in_background()
    _configure_logging(verbose)
    from bot.engine.cache import open_cache
    from bot.pipeline.render import render_json, render_markdown
    from bot.pipeline.run import RunOptions, evaluate
    from bot.pipeline.source import WORKING_TREE, GitSource, GitWorkingTreeSource
    from bot.settings import get_settings

    settings = get_settings()
    bar = _LazyProgress()

    def progress(done: int, total: int, cached: int) -> None:
        if done == 1:
            # The run is recorded at the end: SQLAlchemy and alembic (~0.9 s of CPU) load meanwhile,
            # not before the first request nor after the last answer.
            store = threading.Thread(target=importlib.import_module, args=("bot.store",), name="import-store")
            store.daemon = True
            store.start()
        bar(done, total, cached)

    async def run() -> Any:
        source = GitSource(repo) if head is not None else GitWorkingTreeSource(repo)
        base_sha = source.resolve(base)
        head_sha = source.resolve(head) if head is not None else WORKING_TREE
        cache = None if no_cache else await open_cache(settings.REDIS_URL, settings.EVALBOT_CACHE_DIR)
        try:
            options = RunOptions(list(suites) or None, run_all, api_base, concurrency, cache, progress)
            options.models = [m.strip() for m in (models or "").split(",") if m.strip()]
            report = await evaluate(source, base_sha, head_sha, options)
        finally:
            bar.stop()
            if cache is not None:
                await cache.close()
        if isinstance(source, GitWorkingTreeSource):
            read = sorted(source.read_uncommitted)
            # First: what was evaluated is the first thing to know about the report.
            report.warnings.insert(
                0,
                f"evaluated the working tree: uncommitted files read: {', '.join(read)}"
                if read
                else "evaluated the working tree: every file read is as committed",
            )
        _record_cli_run(report, repo, started, base, head or WORKING_TREE)
        report.base_ref, report.head_ref = base, head or WORKING_TREE
        return report

    started = time.time()
    try:
        report = asyncio.run(run())
    except EvalbotError as exc:
        _fail(exc)
    render: Callable[[Any], str] = render_json if fmt == "json" else render_markdown
    text = render(report)
    click.echo(text)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    sys.exit(report.exit_code)


def _record_cli_run(report: Any, repo: Path, started: float, base: str, head: str) -> None:
    """Keep the run in the history database; a history that cannot be written does not change the verdict."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        store = _open_store(migrate_first=True)
        try:
            store.record_run(
                report,
                repository=str(repo.resolve()),
                trigger="cli",
                started_at=started,
                base_branch=base,
                head_branch=head,
            )
        finally:
            store.close()
    except (SQLAlchemyError, OSError) as exc:
        click.echo(f"warning: the run was not recorded in the database: {exc}", err=True)


@cli.command("validate")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
def validate_command(repo: Path) -> None:
    """Check `.evalbot.yml`, prompt files and datasets of a checkout, without calling any model."""
    sys.exit(_validate(repo))


def _validate(repo: Path) -> int:
    """Print what `evalbot validate` finds in a checkout; return its exit code."""
    from bot.pipeline.changes import gate_certain_to_fail, plan
    from bot.pipeline.config import CONFIG_PATH
    from bot.pipeline.run import data_checks
    from bot.pipeline.source import WorkTreeSource

    if not (repo / CONFIG_PATH).is_file():
        _fail(InputError("no such file", str(repo / CONFIG_PATH)))
    source = WorkTreeSource(repo)

    async def run() -> Any:
        the_plan = await plan(source, "", "", run_all=True)
        return the_plan, await data_checks(source, the_plan, None)

    try:
        result, data = asyncio.run(run())
    except EvalbotError as exc:
        _fail(exc)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    for error in result.errors:
        click.echo(f"error: {error}", err=True)
    for suite_plan in result.suites:
        prompt = suite_plan.head_prompt
        version = f" v{prompt.version}" if prompt.version else ""
        reads_rows_only = suite_plan.suite.prompt is None and suite_plan.suite.promptfoo is None
        what = f"each row's input to {prompt.model}" if reads_rows_only else f"{prompt.path}{version}"
        click.echo(
            f"ok: suite {suite_plan.suite.name}: {what}, "
            f"{len(suite_plan.dataset.cases)} cases in {suite_plan.dataset.path}"
        )
    for quality in data:
        for finding in quality.findings:
            click.echo(f"{finding.severity}: {quality.dataset}: {finding.gate}: {finding.message}", err=True)
        for violation in quality.schema_violations:
            click.echo(
                f"  {quality.dataset}:{violation.line} (case {violation.case_id}) {violation.path}: "
                f"{violation.rule}: {violation.message}",
                err=True,
            )
    certain = gate_certain_to_fail(result)
    for reason in certain:
        click.echo(f"fail: {reason}", err=True)
    if result.errors:
        return EXIT_INPUT
    return EXIT_GATE_FAILED if certain or any(q.failed for q in data) else EXIT_PASS


@cli.command("lineage")
@click.argument("dataset")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option("--rev", default="HEAD", show_default=True, help="The revision to read the dataset and its history at.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
def lineage_command(dataset: str, repo: Path, rev: str, fmt: str) -> None:
    """Each row's origin: the commit and pull request that last changed it, and the source it names.

    Exits 1 when the dataset's suite sets `lineage: {required: true}` and a row names no source.
    """
    import csv
    import dataclasses
    import json

    from bot.pipeline.lineage import RowOrigin, dataset_lineage

    try:
        origins, check = asyncio.run(dataset_lineage(repo, rev, dataset))
    except EvalbotError as exc:
        _fail(exc)
    rows = [dataclasses.asdict(origin) for origin in origins]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=[f.name for f in dataclasses.fields(RowOrigin)])
        writer.writeheader()
        writer.writerows(rows)
    if check.missing:
        ids = ", ".join(case_id for case_id, _line in check.missing[:20])
        more = f" and {len(check.missing) - 20} more" if len(check.missing) > 20 else ""
        level = "fail" if check.failed else "warning"
        click.echo(f"{level}: {len(check.missing)} rows have no `{check.source_field}`: {ids}{more}", err=True)
    sys.exit(EXIT_GATE_FAILED if check.failed else EXIT_PASS)


@cli.command("init")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
def init_command(repo: Path) -> None:
    """Draft a commented `.evalbot.yml` for the prompt files and datasets found, then validate it."""
    from bot.pipeline.config import CONFIG_PATH
    from bot.pipeline.scaffold import init

    try:
        suites, found = init(repo)
    except EvalbotError as exc:
        _fail(exc)
    click.echo(f"wrote {repo / CONFIG_PATH}:")
    for suite in suites:
        if suite.promptfoo is not None:
            click.echo(f"  suite {suite.name}: promptfoo config {suite.promptfoo}")
        elif suite.dataset is None:
            assert suite.prompt is not None
            click.echo(f"  {suite.prompt.path}: no dataset fits it; its suite {suite.name} is left commented out")
        else:
            ids = f"ids from {suite.dataset.id_field}" if suite.dataset.id_field else "no id field found"
            what = suite.prompt.path if suite.prompt is not None else "each row's input"
            click.echo(f"  suite {suite.name}: {what} on {suite.dataset.path} ({ids})")
    for note in found.passed:
        click.echo(f"  walked past {note}")
    if found.truncated:
        click.echo("  (the search stopped early: see the end of the file)")
    click.echo("checking it as evalbot validate does:")
    sys.exit(_validate(repo))


@cli.command("serve")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, envvar="PORT", default=8000, show_default=True)
def serve_command(host: str, port: int) -> None:
    """The GitHub App's web process: POST /api/github/webhooks, GET /healthz, GET /metrics."""
    _configure_logging(verbose=True)
    import uvicorn

    from bot.github.webhook import create_app
    from bot.settings import get_settings

    settings = get_settings()
    if not settings.WEBHOOK_SECRET:
        # Every delivery would be refused: say so at start, not once per webhook.
        _fail(EvalbotError("set WEBHOOK_SECRET to the GitHub App's webhook secret"))
    try:
        app = create_app(settings)
    except EvalbotError as exc:  # a setting that cannot be used (SESSION_SECRET too short)
        _fail(exc)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@cli.command("setup")
@click.option(
    "--public-url",
    required=True,
    help="Where `evalbot serve` will be reached (https://...): the webhook and sign-in URLs.",
)
@click.option("--org", help="Create the app in this organisation (default: your personal account).")
@click.option("--name", help="The app's name on GitHub (default: app.yml's; names are unique on GitHub).")
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="app.yml",
    show_default=True,
    help="The manifest template.",
)
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), default=".env", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True, help="Port of the local setup page.")
@click.option("--github-url", envvar="GITHUB_WEB_URL", default="https://github.com", show_default=True)
@click.option("--api-url", envvar="GITHUB_API_URL", default="https://api.github.com", show_default=True)
def setup_command(
    public_url: str,
    org: str | None,
    name: str | None,
    manifest_path: Path,
    env_file: Path,
    port: int,
    github_url: str,
    api_url: str,
) -> None:
    """Create the GitHub App from app.yml (GitHub's manifest flow) and write its settings to an env file."""
    import uvicorn

    from bot.github.api.setup import plan, setup_app

    local = f"http://127.0.0.1:{port}"
    try:
        setup = plan(
            manifest_path,
            public_url,
            f"{local}/callback",
            env_file,
            org=org,
            name=name,
            web_url=github_url,
            api_url=api_url,
        )
    except EvalbotError as exc:
        _fail(exc)
    done: list[dict[str, Any]] = []
    server = uvicorn.Server(uvicorn.Config(setup_app(setup, done), host="127.0.0.1", port=port, log_level="warning"))

    async def serve_until_created() -> None:
        task = asyncio.create_task(server.serve())
        while not done and not task.done():
            await asyncio.sleep(0.2)
        server.should_exit = True
        await task

    click.echo(f"Open {local}/ in your browser and create the app on GitHub (Ctrl-C to stop).")
    asyncio.run(serve_until_created())
    if not done:
        _fail(EvalbotError("stopped before the app was created"))
    app = done[0]
    click.echo(
        f"Created the GitHub App {app.get('slug')} (id {app.get('id')}); settings written to {env_file} (mode 0600)."
    )
    click.echo(f"Install it on your repositories: {app.get('html_url')}/installations/new")


@cli.command("worker")
def worker_command() -> None:
    """The arq worker that runs evaluation jobs (metrics on WORKER_METRICS_PORT)."""
    from bot.engine.models import import_in_background

    import_in_background()
    _configure_logging(verbose=True)
    from arq.worker import get_kwargs
    from prometheus_client import start_http_server

    from bot.github.worker.liveness import EvalbotWorker
    from bot.github.worker.registry import WorkerSettings
    from bot.settings import get_settings

    settings = get_settings()
    # No token check on prometheus_client's own server: it listens on this host only by default.
    start_http_server(settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_HOST)
    EvalbotWorker(**get_kwargs(WorkerSettings)).run()  # type: ignore[arg-type]


AUDIT_CSV_COLUMNS = ("id", "at", "repository", "pr", "sha", "kind", "actor", "reason", "verdict", "details")


def _open_store(migrate_first: bool) -> Any:
    from bot.settings import get_settings
    from bot.store import database_url, migrate, open_store

    settings = get_settings()
    store = open_store(database_url(settings.DATABASE_URL, settings.EVALBOT_CACHE_DIR))
    if migrate_first:
        migrate(store)
    return store


@cli.command("migrate")
def migrate_command() -> None:
    """Apply pending database migrations to DATABASE_URL (the worker also does at start)."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.store import revision

    try:
        store = _open_store(migrate_first=True)
    except SQLAlchemyError as exc:
        _fail(EvalbotError(f"cannot migrate the database: {exc}"))
    click.echo(f"database at revision {revision(store)}")
    store.close()


@cli.command("audit")
@click.option("--repo", "repo", required=True, help="owner/name of the repository.")
@click.option("--pr", "pr_number", type=int, help="Only this pull request.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--last", type=click.IntRange(min=1), default=1000, show_default=True, help="The newest records only.")
def audit_command(repo: str, pr_number: int | None, fmt: str, last: int) -> None:
    """Export the durable audit trail of a repository (verdicts, approvals, overrides, cancels, /eval
    requests, refusals) from the database, oldest first."""
    import csv
    import json

    from sqlalchemy.exc import SQLAlchemyError

    from bot.store import revision

    store = _open_store(migrate_first=False)
    try:
        if revision(store) is None:
            _fail(EvalbotError("the database has no evalbot tables yet: run `evalbot migrate` (or start the worker)"))
        entries = store.audit_entries(repo, pr_number, last)
    except SQLAlchemyError as exc:
        _fail(EvalbotError(f"cannot read the audit trail from the database: {exc}"))
    finally:
        store.close()
    if fmt == "jsonl":
        for entry in entries:
            click.echo(json.dumps(entry.record(), sort_keys=True))
        return
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(AUDIT_CSV_COLUMNS)
    for entry in entries:
        record = entry.record()
        rest = {k: v for k, v in record.items() if k not in AUDIT_CSV_COLUMNS}
        row = [record.get(column, "") for column in AUDIT_CSV_COLUMNS[:-1]]
        writer.writerow(["" if v is None else v for v in row] + [json.dumps(rest, sort_keys=True) if rest else ""])


@cli.group("feedback")
def feedback_group() -> None:
    """Production feedback posted to `POST /api/feedback`: the repository's token, and the rows not yet merged."""


@feedback_group.command("token")
@click.argument("repo")
def feedback_token_command(repo: str) -> None:
    """Mint (or rotate) REPO's (owner/name) feedback token and print it once: the database keeps only
    its hash, and the previous token stops working."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.store.feedback import mint_token

    if repo.count("/") != 1 or not all(repo.split("/")):
        _fail(InputError(f"{repo!r} is not owner/name"))
    try:
        store = _open_store(migrate_first=True)
        token = mint_token(store, repo)
    except SQLAlchemyError as exc:
        _fail(EvalbotError(f"cannot write the token to the database: {exc}"))
    store.close()
    click.echo(token)
    click.echo(f"The feedback token of {repo}, shown this once: send it as `Authorization: Bearer <token>`.", err=True)


@feedback_group.command("export")
@click.option("--repo", "repo", required=True, help="owner/name of the repository.")
@click.option("--suite", "suite_name", required=True, help="The suite whose rows to write.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".evalbot.yml"),
    show_default=True,
    help="The .evalbot.yml naming the suite's id, expected and source fields (defaults when absent).",
)
def feedback_export_command(repo: str, suite_name: str, fmt: str, config_path: Path) -> None:
    """Write the suite's confirmed feedback that no pull request has proposed yet, as dataset rows with
    their lineage, for teams that merge feedback by hand."""
    import csv
    import json

    from sqlalchemy.exc import SQLAlchemyError

    from bot.github.flows.feedback import FeedbackRefused, FeedbackSuite, dataset_suite
    from bot.pipeline.config import parse_config
    from bot.store import revision
    from bot.store.feedback import pending_feedback

    suite = FeedbackSuite(f"{suite_name}.jsonl")
    if config_path.is_file():
        try:
            suite = FeedbackSuite.of(dataset_suite(parse_config(config_path.read_text(), str(config_path)), suite_name))
        except FeedbackRefused as exc:
            _fail(InputError(str(exc), str(config_path)))
        except EvalbotError as exc:
            _fail(exc)
    store = _open_store(migrate_first=False)
    try:
        if revision(store) is None:
            _fail(EvalbotError("the database has no evalbot tables yet: run `evalbot migrate` (or start the worker)"))
        rows = [suite.row(item) for item in pending_feedback(store, repo) if item.suite == suite_name]
    except SQLAlchemyError as exc:
        _fail(EvalbotError(f"cannot read the feedback from the database: {exc}"))
    finally:
        store.close()
    if fmt == "jsonl":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        values = [row.get(column) for column in columns]
        writer.writerow(["" if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])


# glibc's mallopt parameter for the number of malloc arenas (malloc.h).
M_ARENA_MAX = -8


def _few_malloc_arenas() -> None:
    """At most two glibc malloc arenas: by default each thread that allocates (litellm's
    imports, the store's, `asyncio.to_thread`'s pool) gets an arena of its own, and what it frees there
    stays in the process's RSS (12 MiB of `evalbot eval`'s peak). As MALLOC_ARENA_MAX=2 would."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator has no such arenas
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 2)


def main() -> None:
    _few_malloc_arenas()
    try:
        cli()
    except SystemExit as exc:
        if "litellm" in sys.modules and (exc.code is None or isinstance(exc.code, int)):
            # Tearing the interpreter down frees litellm's modules and objects one by one: 1-4 s
            # after the report is out. Everything is written and closed by now; flush and go.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code or 0)
        raise
