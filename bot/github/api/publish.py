"""Check runs and the sticky comment: pure payload builders, and the githubkit calls last."""

from __future__ import annotations

from typing import Any, Literal

from githubkit import GitHub

from bot.errors import Problem
from bot.github.api.redact import Redactor
from bot.github.constants import COMMENT_MARKER, MAX_BODY_CHARS, MAX_OUTPUT_BYTES
from bot.pipeline.render import cut_utf8, render_markdown, render_template, utf8_size
from bot.pipeline.run import Report

Conclusion = Literal["success", "failure", "neutral", "action_required", "cancelled", "timed_out", "skipped"]
Level = Literal["failure", "warning", "notice"]

# GitHub takes at most 50 annotations per check-run request; more are appended by further updates.
ANNOTATIONS_PER_REQUEST = 50
# Annotations sent for one check run: past this, the summary counts the rest (one request per 50).
MAX_ANNOTATIONS = 500
# GitHub's limits on an annotation's title (characters) and message ("64 KB": bytes of UTF-8).
_MAX_ANNOTATION_TITLE = 255
_MAX_ANNOTATION_MESSAGE_BYTES = 64 * 1024

# GitHub's limit on a check run's title.
_MAX_TITLE_CHARS = 255
# A check-run button (GitHub: label ≤ 20, description ≤ 40, identifier ≤ 20 characters; 3 at most).
RERUN_ACTION = {"label": "Re-run evals", "description": "Evaluate this commit again", "identifier": "rerun"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_bytes(text: str, limit: int) -> str:
    return text if utf8_size(text) <= limit else cut_utf8(text, limit - utf8_size("…")) + "…"


def fit(text: str, limit: int, details_url: str | None = None, in_bytes: bool = True) -> str:
    """`text` within `limit` bytes of UTF-8 (check-run output) or characters (bodies): a longer one is cut
    between characters and ends with a note linking the full report on the run page (`details_url`)."""
    size = utf8_size if in_bytes else len
    if size(text) <= limit:
        return text
    note = render_template("cut.md.j2", details_url=details_url)
    room = limit - size(note)
    return (cut_utf8(text, room) if in_bytes else text[: max(0, room)]) + note


def output(title: str, summary: str, details_url: str | None = None) -> dict[str, str]:
    """A check run's `output`, within GitHub's limits (a longer one is refused with 422)."""
    return {
        "title": _clip(" ".join(title.split()), _MAX_TITLE_CHARS),
        "summary": fit(summary, MAX_OUTPUT_BYTES, details_url),
    }


def report_title(report: Report) -> str:
    return render_template("check_title.md.j2", report=report).strip()


def evals_conclusion(report: Report) -> Conclusion:
    return "success" if report.verdict == "pass" else "failure"


def annotation(path: str, line: int, level: Level, title: str, message: str) -> dict[str, Any]:
    """One check-run annotation: shown on `line` of `path` in the pull request's "Files changed"."""
    return {
        "path": path,
        "start_line": line,
        "end_line": line,
        "annotation_level": level,
        "title": _clip(title, _MAX_ANNOTATION_TITLE),
        "message": _clip_bytes(message, _MAX_ANNOTATION_MESSAGE_BYTES),
    }


def blob_url(pull: dict[str, Any], head_sha: str) -> str | None:
    """The pull request's files at `head_sha` on the web, for links: from the base repository's
    `html_url` (the API's `url` is not a page), which shows a pull request's head commits, forks' too."""
    html_url = ((pull.get("base") or {}).get("repo") or {}).get("html_url")
    return f"{html_url}/blob/{head_sha}" if html_url else None


def cap_annotations(notes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The annotations sent (the first MAX_ANNOTATIONS) and how many more are only counted."""
    return notes[:MAX_ANNOTATIONS], max(0, len(notes) - MAX_ANNOTATIONS)


def report_annotations(report: Report) -> list[dict[str, Any]]:
    """Every problem of the report that has a file and line, as annotations sorted by file and line.

    Unreadable input and broken rules are failures; schema violations, contamination and outliers
    follow their data gate (fail: failure, else warning); regressed cases are warnings.
    """
    found = [
        annotation(p.path, p.line, "failure", "evalbot: cannot be read" if p in report.errors else "evalbot", p.message)
        for p in [*report.errors, *report.problems]
        if isinstance(p, Problem) and p.path and p.line
    ]
    for dq in report.data:
        failing: set[str] = {f.gate for f in dq.findings if f.severity == "fail"}
        level: dict[str, Level] = {
            gate: "failure" if gate in failing else "warning" for gate in ("schema", "contamination", "anomalies")
        }
        for v in dq.schema_violations:
            where = f"{v.path}: " if v.path else ""
            found.append(
                annotation(
                    dq.dataset,
                    v.line,
                    level["schema"],
                    f"Schema violation (case {v.case_id})",
                    f"{where}{v.rule}: {v.message}",
                )
            )
        for case_id, kind in dq.contaminated:
            line = dq.contaminated_lines.get(case_id)
            if line is not None:
                message = f"case {case_id} also appears in the training data ({kind} match)"
                found.append(annotation(dq.dataset, line, level["contamination"], "Contaminated row", message))
        for line, message in dq.outliers:
            found.append(annotation(dq.dataset, line, level["anomalies"], "Outlier", message))
    governance = [
        *(report.policy.annotations() if report.policy else []),
        *(n for lc in report.lineage for n in lc.annotations()),
    ]
    found += [annotation(*note) for note in governance]
    for suite in report.suites:
        for flip in suite.regressions:
            line = suite.regression_lines.get(flip.case_id)
            if line is not None:
                message = f"case {flip.case_id} passed on the base and fails on the head: {flip.reason}"
                found.append(annotation(suite.dataset, line, "warning", f"Regression in suite {suite.name}", message))
    return sorted(found, key=lambda a: (a["path"], a["start_line"]))


def comment_body(
    summary_markdown: str, head_sha: str | None = None, details_url: str | None = None, trends: str = ""
) -> str:
    """The sticky comment: the hidden marker, the same Markdown as the check run, then the trend charts
    (Mermaid renders in comments) when they fit."""
    room = MAX_BODY_CHARS - 200  # marker and footer
    body = fit(summary_markdown, room, details_url, in_bytes=False)
    trends = trends if len(body) + len(trends) <= room else ""
    return render_template(
        "comment.md.j2", marker=COMMENT_MARKER, body=body, trends=trends, head_sha=head_sha, details_url=details_url
    )


def report_markdown(report: Report, blob_url: str | None = None) -> str:
    # Bytes are at least characters: what fits the check run fits the comment too.
    return render_markdown(report, max_bytes=MAX_OUTPUT_BYTES - 200, blob_url=blob_url)


class Publisher:
    """Posts to one pull request's head SHA; idempotent, so a re-run job finds what it posted before.

    Everything evalbot posts goes through here, so here is the one redaction step: every text is
    passed through `redact` (secret values, credential-shaped tokens, URL credentials and query
    strings out) before it leaves the worker.
    """

    def __init__(
        self,
        gh: GitHub[Any],
        owner: str,
        repo: str,
        pr_number: int,
        head_sha: str,
        app_id: str | None = None,
        redact: Redactor | None = None,
    ):
        self.gh, self.owner, self.repo, self.pr_number, self.head_sha = gh, owner, repo, pr_number, head_sha
        self.app_id = app_id
        self.redact = redact or Redactor.for_settings()
        self._base = f"/repos/{owner}/{repo}"
        # The check run's "Details" page (the run page once the run is stored): a text cut to fit
        # GitHub's limits links the full report there.
        self.details_url: str | None = None

    def _output(self, title: str, summary: str) -> dict[str, str]:
        return output(self.redact(title), self.redact(summary), self.details_url)

    def _body(self, text: str) -> str:
        return fit(self.redact(text), MAX_BODY_CHARS, self.details_url, in_bytes=False)

    async def ensure_check(self, name: str, details_url: str | None = None) -> int:
        """The id of check run `name` on the head SHA: one still open (a job re-run after a crash), else a
        new queued one. A completed run is never reopened: GitHub expects a new run for a re-run."""
        existing = await self.check_run(name)
        if existing is not None and existing.get("status") != "completed":
            self.details_url = details_url or existing.get("details_url") or self.details_url
            return int(existing["id"])
        created = await self.gh.arequest("POST", f"{self._base}/check-runs", json=self._new_run(name, details_url))
        return int(created.json()["id"])

    async def post_completed(
        self, name: str, conclusion: Conclusion, title: str, summary: str, details_url: str | None = None
    ) -> int:
        """A new check run `name`, completed as it is created: one request where finding, creating and
        completing a run takes three. For a check that is never left open (the approval check): the
        newest run of a name is the one GitHub shows and branch protection reads."""
        payload = self._new_run(name, details_url, "completed")
        payload |= {"conclusion": conclusion, "output": self._output(title, summary)}
        created = await self.gh.arequest("POST", f"{self._base}/check-runs", json=payload)
        return int(created.json()["id"])

    async def post_in_progress(self, name: str, title: str, summary: str, details_url: str | None = None) -> int:
        """A new check run `name`, in progress as it is created: it becomes the run GitHub shows for the
        name (pending), and the one a job's `ensure_check` finds open and completes."""
        payload = self._new_run(name, details_url, "in_progress") | {"output": self._output(title, summary)}
        created = await self.gh.arequest("POST", f"{self._base}/check-runs", json=payload)
        return int(created.json()["id"])

    def _new_run(self, name: str, details_url: str | None, status: str = "queued") -> dict[str, Any]:
        payload: dict[str, Any] = {"name": name, "head_sha": self.head_sha, "status": status}
        self.details_url = details_url or self.details_url
        if self.pr_number:
            # GitHub's re-run payloads list no pull request for a fork's head: this names it.
            payload["external_id"] = str(self.pr_number)
        if details_url:
            payload["details_url"] = details_url
        return payload

    async def progress(self, check_id: int, title: str, summary: str) -> None:
        await self.gh.arequest(
            "PATCH",
            f"{self._base}/check-runs/{check_id}",
            json={"status": "in_progress", "output": self._output(title, summary)},
        )

    async def complete(
        self,
        check_id: int,
        conclusion: Conclusion,
        title: str,
        summary: str,
        rerun_button: bool = False,
        notes: list[dict[str, Any]] | None = None,
        more_notes: int = 0,
    ) -> None:
        """Complete the check run; its annotations (`notes`) go 50 per request, the first 50 with the
        completion and the rest in further updates with the same output (GitHub appends them).
        `more_notes`, those `cap_annotations` left out, are counted at the end of the summary."""
        notes = notes or []
        if more_notes:
            more = render_template("annotations_more.md.j2", shown=len(notes), more=more_notes).strip()
            summary = fit(summary, MAX_OUTPUT_BYTES - utf8_size(more) - 2, self.details_url) + "\n\n" + more
        out = self._output(title, summary)
        batches = [notes[i : i + ANNOTATIONS_PER_REQUEST] for i in range(0, len(notes), ANNOTATIONS_PER_REQUEST)]
        payload: dict[str, Any] = {"status": "completed", "conclusion": conclusion, "output": out}
        if batches:
            payload["output"] = {**out, "annotations": [self._note(n) for n in batches[0]]}
        if rerun_button:
            payload["actions"] = [RERUN_ACTION]
        await self.gh.arequest("PATCH", f"{self._base}/check-runs/{check_id}", json=payload)
        for batch in batches[1:]:
            update = {"output": {**out, "annotations": [self._note(n) for n in batch]}}
            await self.gh.arequest("PATCH", f"{self._base}/check-runs/{check_id}", json=update)

    def _note(self, note: dict[str, Any]) -> dict[str, Any]:
        """An annotation with its texts redacted, as everything posted is."""
        return {**note, "title": self.redact(note["title"]), "message": self.redact(note["message"])}

    async def check_run(self, name: str) -> dict[str, Any] | None:
        """The latest check run `name` of this app on the head SHA, as GitHub gives it.

        Filtered by app: a workflow job may carry the same name, and must not pass for evalbot's result.
        """
        params: dict[str, Any] = {"check_name": name, "filter": "latest"}
        if self.app_id:
            params["app_id"] = self.app_id
        response = await self.gh.arequest("GET", f"{self._base}/commits/{self.head_sha}/check-runs", params=params)
        runs = response.json().get("check_runs", [])
        return dict(runs[0]) if runs else None

    async def react(self, comment_id: int, content: str = "eyes") -> None:
        await self.gh.arequest(
            "POST", f"{self._base}/issues/comments/{comment_id}/reactions", json={"content": content}
        )

    async def reply(self, body: str) -> None:
        """A new comment (answers to commands; the report lives in the sticky comment)."""
        await self.gh.arequest(
            "POST", f"{self._base}/issues/{self.pr_number}/comments", json={"body": self._body(body)}
        )

    async def upsert_comment(self, body: str) -> int:
        """Edit the pull request's sticky comment in place, or create it; returns its id."""
        existing = await self._find_comment()
        payload = {"body": self._body(body)}
        if existing is not None:
            await self.gh.arequest("PATCH", f"{self._base}/issues/comments/{existing}", json=payload)
            return existing
        created = await self.gh.arequest("POST", f"{self._base}/issues/{self.pr_number}/comments", json=payload)
        return int(created.json()["id"])

    async def _find_comment(self) -> int | None:
        page = 1
        while True:
            response = await self.gh.arequest(
                "GET", f"{self._base}/issues/{self.pr_number}/comments", params={"per_page": 100, "page": page}
            )
            comments = response.json()
            for comment in comments:
                # Only a comment this app wrote: anyone (another app's bot too) can paste the marker.
                if self._ours(comment) and COMMENT_MARKER in (comment.get("body") or ""):
                    return int(comment["id"])
            if len(comments) < 100:
                return None
            page += 1

    def _ours(self, comment: dict[str, Any]) -> bool:
        """Written with this app's installation token: GitHub names the app in `performed_via_github_app`."""
        app = comment.get("performed_via_github_app") or {}
        return self.app_id is not None and str(app.get("id")) == str(self.app_id)
