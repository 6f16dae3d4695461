"""A fake GitHub REST API for githubkit: serves a real git repository, records and validates writes.

It checks the app JWT and the installation token, and refuses what GitHub refuses (422 on an output
over 65,535 characters, an unknown conclusion, more than 3 actions, a title over 255 characters).
Lists stop where GitHub's do: 3,000 files for a pull request, 300 for a comparison, 100 per page; a
recursive tree past 100,000 entries is truncated; a renamed file is listed once, "renamed", with its
`previous_filename`. A completed check run is not reopened.

Installations are limited as GitHub documents ("Rate limits for the REST API", "Troubleshooting the
REST API"): every answer carries the `x-ratelimit-*` headers of the installation's hourly quota; past
it, 403 "API rate limit exceeded for installation ID …" with `x-ratelimit-remaining: 0`; a secondary
limit is a 403 or a 429, with `retry-after` or with no hint (then GitHub asks for at least a minute);
requests made before the wait is over are kept (`requests_while_limited`) and limited again.
Installation tokens expire (`expires_at`, an hour by default) and an expired one is answered 401 "Bad
credentials". An endpoint needing a permission the installation lacks
is answered 403 "Resource not accessible by integration" with `x-accepted-github-permissions`.
"""

from __future__ import annotations

import base64
import itertools
import os
import posixpath
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.github.fake_deliveries import FakeDeliveries
from tests.github.fake_oauth import FakeOAuth
from tests.servers import ThreadedServer

CONCLUSIONS = {"action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"}
STATUSES = {"queued", "in_progress", "completed", "waiting", "requested", "pending"}
# GitHub's docs: "Only GitHub Actions can set a status of waiting, pending, or requested", and "You cannot
# change a check run conclusion to stale, only GitHub can set this": an app setting one is refused.
GITHUB_ONLY_STATUSES = {"waiting", "requested", "pending"}
GITHUB_ONLY_CONCLUSIONS = {"stale"}
# The collaborator permission endpoint's `permission` is a legacy base role: maintain counts as write,
# triage as read (`role_name` keeps the role itself).
_LEGACY_PERMISSION = {"maintain": "write", "triage": "read"}
# GitHub's caps: the pull request file list, and the file list of a comparison (both documented).
PULL_FILES_MAX = 3000
COMPARE_FILES_MAX = 300
# Most list endpoints take `per_page` up to 100.
PER_PAGE_MAX = 100
# A recursive tree is cut (`truncated: true`) past 100,000 entries (GitHub's "Get a tree" docs).
TREE_ENTRIES_MAX = 100_000
# The permissions app.yml asks for: what an installation has unless a test takes one away.
APP_PERMISSIONS = {
    "checks": "write",
    "pull_requests": "write",
    "issues": "write",
    "contents": "read",
    "metadata": "read",
    "members": "read",
    "merge_queues": "read",
}
# The permission each endpoint family needs (GitHub's "Permissions required for GitHub Apps"); writes
# need "write". Pull-request comments go through the issues API.
_NEEDS = [
    (re.compile(r"^/orgs/[^/]+/teams/"), "members"),
    (re.compile(r"^/repos/[^/]+/[^/]+/(check-runs|commits/[^/]+/check-runs)"), "checks"),
    (re.compile(r"^/repos/[^/]+/[^/]+/pulls"), "pull_requests"),
    (re.compile(r"^/repos/[^/]+/[^/]+/issues"), "issues"),
    (re.compile(r"^/repos/[^/]+/[^/]+/(contents|compare|git)/"), "contents"),
    (re.compile(r"^/repos/"), "metadata"),
]
# Tokens GitHub issued (token -> installation id, expiry in epoch seconds): one GitHub for every fake in
# the process, as githubkit keeps a token for the whole process.
_TOKENS: dict[str, tuple[int, float]] = {}
_token_ids = itertools.count(1)


def validation_failed(resource: str, field: str, code: str, message: str) -> JSONResponse:
    """GitHub's 422 for a field it refuses, in its shape: the reason is in `errors`, not in `message`."""
    error = {"resource": resource, "code": code, "field": field, "message": message}
    return JSONResponse({"message": "Validation Failed", "errors": [error], "status": "422"}, status_code=422)


def body_too_long(resource: str, body: str | None) -> JSONResponse | None:
    """GitHub counts an issue's or comment's body in characters (code points), at most 65,536."""
    if len(body or "") <= 65_536:
        return None
    if resource == "IssueComment":
        return validation_failed(resource, "data", "unprocessable", "Body is too long (maximum is 65536 characters)")
    return validation_failed(resource, "body", "custom", "body is too long (maximum is 65536 characters)")


def output_too_big(body: dict[str, Any]) -> JSONResponse | None:
    """GitHub counts a check run's output.summary and output.text in bytes of UTF-8, at most 65,535
    (its docs say "characters"; the API answers "bytesize")."""
    out = body.get("output") or {}
    for key in ("summary", "text"):
        if len((out.get(key) or "").encode()) > 65_535:
            return validation_failed("CheckRun", key, "custom", f"{key} exceeds a maximum bytesize of 65535")
    return None


def _page(items: list[Any], page: int, per_page: int) -> list[Any]:
    """One page of a list, `per_page` capped at GitHub's 100."""
    size = min(per_page, PER_PAGE_MAX)
    return items[(page - 1) * size : page * size]


def generate_app_keys() -> tuple[str, str]:
    """A GitHub App's key pair as PEM text: the private key evalbot signs with, the public one the fake checks."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class FakeGitHub:
    def __init__(self, repo_root: Path, public_key: str, app_id: str):
        self.repo_root = repo_root
        self.public_key = public_key
        self.app_id = app_id
        self.pulls: dict[int, tuple[str, str]] = {}  # base SHA at the last push, head SHA
        # Branch names (base, head) by pull request; a base ref resolves to the git branch's tip now.
        self.pull_refs: dict[int, tuple[str, str]] = {}
        self.closed: set[int] = set()
        self.drafts: set[int] = set()
        # Pull request details beyond base and head: author, head repository (forks).
        self.pull_authors: dict[int, str] = {}
        self.fork_pulls: set[int] = set()
        # Title and body of the pull requests the app opened (POST /pulls).
        self.pull_bodies: dict[int, dict[str, Any]] = {}
        self.permissions: dict[str, str] = {"Codertocat": "admin"}  # collaborator permission by login
        self.teams: dict[str, set[str]] = {}  # "org/team-slug" -> active members
        self.reactions: list[tuple[int, str]] = []
        self.files_status = 200  # answer of the pull request file list (500: always broken)
        self.tree_entries_max = TREE_ENTRIES_MAX
        self.check_runs: dict[int, dict[str, Any]] = {}
        # Annotations per check run, in the order received (GitHub appends each update's), and the
        # size of each request's batch.
        self.annotations: dict[int, list[dict[str, Any]]] = {}
        self.annotation_requests: list[int] = []
        self.comments: dict[int, dict[str, Any]] = {}
        self.default_branch = "main"
        # Ruleset rules by branch, as "Get rules for a branch" lists them (a merge queue's settings).
        self.branch_rules: dict[str, list[dict[str, Any]]] = {}
        # Issues the app opened or anyone did (not pull requests), by number.
        self.issues: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, Any]] = []  # every JSON write, in order
        self.write_times: list[float] = []  # time.monotonic() of each of `bodies`
        # Answers for the next repository requests, in order: a status (502), or (status, headers, message).
        self.fail_next: list[int | tuple[int, dict[str, str], str]] = []
        # An outage: every request is answered 502 until this time (time.monotonic()).
        self.down_until = 0.0
        # Installation tokens: lifetime (GitHub: one hour) and what the installation may do.
        self.token_lifetime_s = 3600.0
        self.installation_permissions: dict[str, str] = dict(APP_PERMISSIONS)
        # What a refusal's `x-accepted-github-permissions` lists, by the permission refused, when GitHub
        # accepts alternative sets (`a=read; b=write, c=read`); else the one permission.
        self.accepted_permissions: dict[str, str] = {}
        self.tokens_issued = 0
        # The primary rate limit per installation: requests per window (GitHub: 5,000 an hour).
        self.rate_limit = 5000
        self.rate_window_s = 3600.0
        self._rate: dict[int, tuple[int, float]] = {}  # installation -> (used, reset epoch seconds)
        # Requests made with an installation token, in order: (installation, method, path).
        self.installation_requests: list[tuple[int, str, str]] = []
        # A secondary limit: the next `secondary_hits` installation requests (to paths containing
        # `secondary_path`: GitHub limits per endpoint) get a `secondary_status` (403 or 429) with
        # `retry-after`, or with no hint at all when `secondary_retry_after_s` is None.
        self.secondary_hits = 0
        self.secondary_retry_after_s: int | None = 1
        self.secondary_status = 403
        self.secondary_path = ""
        # After a limited answer GitHub asks the installation to wait: `retry-after`, the reset, or (no
        # hint) at least a minute. Requests made before that are kept here (and limited again).
        self._wait_until: dict[int, float] = {}
        self.requests_while_limited: list[tuple[int, str, str]] = []
        self.rate_limited = 0  # requests refused for a primary or secondary rate limit
        self.secondary_hits_served = 0
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        # GitHub sign-in and user tokens (tests/github/fake_oauth.py).
        self.oauth = FakeOAuth()
        # Where clone URLs point (`clone_url` of a repository): github.com, or a test's fake LFS host
        # (tests/github/fake_lfs.py), since git-lfs finds a repository's LFS server from its clone URL.
        self.clone_base = "https://github.com"
        # The app's webhook deliveries (tests/github/fake_deliveries.py).
        self.deliveries = FakeDeliveries()
        self.app = self._make_app()
        self.port = 0
        self._http = ThreadedServer(self.app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def runs_named(self, name: str, head_sha: str | None = None) -> list[dict[str, Any]]:
        """The app's runs named `name` (on `head_sha`), oldest first."""
        return [
            r
            for r in self.check_runs.values()
            if r["name"] == name
            and (head_sha is None or r["head_sha"] == head_sha)
            and r["app"]["id"] == int(self.app_id)
        ]

    def add_comment(
        self, issue: int, body: str, login: str, user_type: str = "User", app_id: int | None = None
    ) -> dict[str, Any]:
        """A comment on `issue` as GitHub lists it; `app_id` only for one an app wrote with its token."""
        app = {"id": app_id, "slug": "evalbot" if app_id == int(self.app_id) else f"app-{app_id}"} if app_id else None
        comment = {
            "id": next(self._ids),
            "issue": issue,
            "body": body,
            "edits": 0,
            "user": {"login": login, "type": user_type},
            "performed_via_github_app": app,
        }
        self.comments[comment["id"]] = comment
        return comment

    def requests_to(self, installation_id: int, method: str | None = None) -> list[tuple[str, str]]:
        """The requests made with `installation_id`'s tokens (`method` only), as (method, path)."""
        return [(m, p) for i, m, p in self.installation_requests if i == installation_id and method in (None, m)]

    def expire_tokens(self, installation_id: int) -> None:
        """The installation's tokens issued so far expire now (GitHub no longer takes them)."""
        with self._lock:
            for token, (installation, _) in list(_TOKENS.items()):
                if installation == installation_id:
                    _TOKENS[token] = (installation, time.time() - 1)

    def exhaust_quota(self, installation_id: int, reset_in_s: float) -> None:
        """Spend the installation's whole quota, its window resetting in `reset_in_s` seconds."""
        with self._lock:
            self._rate[installation_id] = (self.rate_limit, time.time() + reset_in_s)

    def wait_over(self, installation_id: int) -> None:
        """The wait GitHub asked of the installation after a limited answer has passed."""
        with self._lock:
            self._wait_until.pop(installation_id, None)

    def spend_quota(self, installation_id: int, used: int) -> None:
        """Count `used` requests in the installation's window (a window of `rate_window_s` from now: the
        wait for the last one's reset is over)."""
        with self._lock:
            self._rate[installation_id] = (used, time.time() + self.rate_window_s)
            self._wait_until.pop(installation_id, None)

    def _installation_of(self, header: str) -> int | None:
        """The installation a live token belongs to; None for an unknown or expired token."""
        issued = _TOKENS.get(header.removeprefix("token ").removeprefix("Bearer "))
        if issued is None or issued[1] <= time.time():
            return None
        return issued[0]

    def _rate_headers(self, installation_id: int, counted: bool) -> dict[str, str]:
        """Count one request against the installation's window (when `counted`) and say where it stands."""
        now = time.time()
        used, reset = self._rate.get(installation_id, (0, now + self.rate_window_s))
        if now >= reset:
            used, reset = 0, now + self.rate_window_s
        if counted:
            used += 1
        self._rate[installation_id] = (used, reset)
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(max(0, self.rate_limit - used)),
            "x-ratelimit-used": str(min(used, self.rate_limit)),
            # Epoch seconds, rounded up as GitHub's reset is never before the window ends.
            "x-ratelimit-reset": str(int(reset) + (reset % 1 > 0)),
            "x-ratelimit-resource": "core",
        }

    def _limited(self, installation_id: int, method: str, path: str) -> tuple[Response | None, dict[str, str]]:
        """A rate-limit or permission refusal for this installation request, or None; and its rate headers."""
        used, reset = self._rate.get(installation_id, (0, 0.0))
        now = time.time()
        over = used >= self.rate_limit and now < reset
        headers = self._rate_headers(installation_id, counted=not over)
        early = now < self._wait_until.get(installation_id, 0.0)
        if early:
            self.requests_while_limited.append((installation_id, method, path))
        secondary = (self.secondary_hits > 0 and self.secondary_path in path) or (early and not over)
        if over or secondary:
            self.rate_limited += 1
        if over:
            self._wait_until[installation_id] = reset
            message = f"API rate limit exceeded for installation ID {installation_id}."
            return JSONResponse({"message": message}, status_code=403, headers=headers), headers
        if secondary:
            if not early:
                self.secondary_hits -= 1
                self.secondary_hits_served += 1
            wait_s = self.secondary_retry_after_s
            self._wait_until[installation_id] = max(self._wait_until.get(installation_id, 0.0), now + (wait_s or 60))
            message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            hint = {} if wait_s is None else {"retry-after": str(wait_s)}
            limited = {**headers, **hint}
            return JSONResponse({"message": message}, status_code=self.secondary_status, headers=limited), headers
        needed = next((name for pattern, name in _NEEDS if pattern.match(path)), None)
        level = "read" if method in ("GET", "HEAD") else "write"
        granted = self.installation_permissions.get(needed or "")
        if needed is not None and (granted is None or (level == "write" and granted != "write")):
            accepted = self.accepted_permissions.get(needed, f"{needed}={level}")
            refusal = {**headers, "x-accepted-github-permissions": accepted}
            body = {
                "message": "Resource not accessible by integration",
                "documentation_url": "https://docs.github.com/rest",
                "status": "403",
            }
            return JSONResponse(body, status_code=403, headers=refusal), headers
        self.installation_requests.append((installation_id, method, path))
        return None, headers

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(self.repo_root), *args], capture_output=True, text=True)

    def _git_out(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.repo_root), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **(env or {})},
        )
        return done.stdout.strip()

    def queue(self, number: int, parent: str | None = None, edits: dict[str, str] | None = None) -> dict[str, str]:
        """What GitHub's merge queue makes when pull request `number` is queued: a merge commit of its head
        onto `parent` (the base branch's tip by default, or the commit of the group queued ahead) on the
        branch `gh-readonly-queue/<base>/pr-<number>-<parent>`, with `edits` (path -> text) written on top
        (a tampered group). Returns the `merge_group` object of the `checks_requested` delivery."""
        base_ref = self.pull_refs.get(number, ("main", "feature"))[0]
        head = self.pulls[number][1]
        parent = parent or self._git_out("rev-parse", base_ref)
        tree = self._git_out("merge-tree", "--write-tree", parent, head).splitlines()[0]
        if edits:
            with tempfile.TemporaryDirectory() as tmp:
                index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
                self._git_out("read-tree", tree, env=index)
                for path, text in edits.items():
                    blob = self._git_out("hash-object", "-w", "--stdin", stdin=text)
                    self._git_out("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index)
                tree = self._git_out("write-tree", env=index)
        commit = self._git_out(
            "commit-tree", tree, "-p", parent, "-p", head, "-m", f"Merge pull request #{number}", "-m", "queued"
        )
        ref = f"refs/heads/gh-readonly-queue/{base_ref}/pr-{number}-{parent}"
        self._git_out("update-ref", ref, commit)
        return {"head_sha": commit, "head_ref": ref, "base_sha": parent, "base_ref": f"refs/heads/{base_ref}"}

    def set_merge_queue(self, branch: str, grouping_strategy: str) -> None:
        """A ruleset with a merge queue on `branch` (the parameters GitHub's REST API documents)."""
        parameters = {
            "merge_method": "MERGE",
            "max_entries_to_build": 5,
            "min_entries_to_merge": 1,
            "max_entries_to_merge": 5,
            "min_entries_to_merge_wait_minutes": 5,
            "grouping_strategy": grouping_strategy,
            "check_response_timeout_minutes": 60,
        }
        self.branch_rules[branch] = [{"type": "merge_queue", "parameters": parameters}]

    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def auth_and_faults(request: Request, call_next: Any) -> Response:
            if time.monotonic() < self.down_until:
                return JSONResponse({"message": "Server Error"}, status_code=502)
            with self._lock:
                self.requests.append((request.method, request.url.path))
                failure = self.fail_next.pop(0) if self.fail_next and request.url.path.startswith("/repos/") else None
            if failure is not None:
                status, headers, message = failure if isinstance(failure, tuple) else (failure, {}, "Server Error")
                return JSONResponse({"message": message}, status_code=status, headers=headers)
            header = request.headers.get("authorization", "")
            # GitHub's web host (OAuth) and user tokens: fake_oauth.py answers them.
            if request.url.path.startswith(("/login/oauth/", "/settings/apps/", "/organizations/", "/app-manifests/")):
                return await call_next(request)
            request.state.user = self.oauth.user_of(header)
            if request.state.user is not None:
                if request.method != "GET" or not request.url.path.startswith(("/user", "/repos/", "/repositories/")):
                    return JSONResponse({"message": "Resource not accessible by integration"}, status_code=403)
                return await call_next(request)
            if request.url.path.startswith("/app/"):
                try:
                    claims = jwt.decode(header.removeprefix("Bearer "), self.public_key, algorithms=["RS256"])
                except jwt.PyJWTError as exc:
                    return JSONResponse({"message": f"bad JWT: {exc}"}, status_code=401)
                if str(claims.get("iss")) != self.app_id:
                    return JSONResponse({"message": "wrong app"}, status_code=401)
                response: Response = await call_next(request)
                return response
            installation = self._installation_of(header)
            if installation is None:
                # GitHub: no credentials "Requires authentication"; a token it does not take "Bad credentials".
                message = "Bad credentials" if header else "Requires authentication"
                return JSONResponse({"message": message}, status_code=401)
            with self._lock:
                refusal, rate = self._limited(installation, request.method, request.url.path)
            if refusal is not None:
                return refusal
            if request.method in ("POST", "PATCH") and request.url.path.startswith("/repos/"):
                self.bodies.append((request.method, request.url.path, await request.json()))
                self.write_times.append(time.monotonic())
            answer: Response = await call_next(request)
            answer.headers.update(rate)
            return answer

        @app.post("/app/installations/{installation_id}/access_tokens")
        async def token(installation_id: int) -> JSONResponse:
            expires = time.time() + self.token_lifetime_s
            with self._lock:
                token = f"ghs_fake{next(_token_ids):06d}"
                _TOKENS[token] = (installation_id, expires)
                self.tokens_issued += 1
            body = {
                "token": token,
                # GitHub's format, to the second.
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
                "permissions": dict(self.installation_permissions),
                "repository_selection": "all",
            }
            return JSONResponse(body, status_code=201)

        @app.get("/repos/{owner}/{repo}/contents/{path:path}")
        async def contents(owner: str, repo: str, path: str, ref: str, request: Request) -> Response:
            return self._contents(f"/repos/{owner}/{repo}/contents", path, ref, request.headers.get("accept", ""))

        @app.get("/repos/{owner}/{repo}/pulls")
        async def list_pulls(
            owner: str, repo: str, state: str = "open", page: int = 1, per_page: int = 30, head: str | None = None
        ) -> JSONResponse:
            found = [self._pull(owner, repo, n) for n in sorted(self.pulls)]
            found = [p for p in found if state == "all" or p["state"] == state]
            if head is not None:
                # `user:ref-name`: the pull requests from that branch of that user's repository.
                user, _, ref = head.partition(":")
                found = [
                    p
                    for p in found
                    if p["head"]["ref"] == ref and p["head"]["repo"]["full_name"].startswith(user + "/")
                ]
            return JSONResponse(_page(found, page, per_page))

        @app.get("/repos/{owner}/{repo}/pulls/{number}")
        async def pull(owner: str, repo: str, number: int) -> JSONResponse:
            if number not in self.pulls:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            return JSONResponse(self._pull(owner, repo, number))

        @app.get("/repos/{owner}/{repo}/rules/branches/{branch:path}")
        async def branch_rules(owner: str, repo: str, branch: str) -> JSONResponse:
            # Every active rule that applies to the branch, each with where its ruleset lives (GitHub's shape).
            rules = [
                {"ruleset_source_type": "Repository", "ruleset_source": f"{owner}/{repo}", "ruleset_id": 1, **rule}
                for rule in self.branch_rules.get(branch, [])
            ]
            return JSONResponse(rules)

        @app.get("/repos/{owner}/{repo}/git/ref/{ref:path}")
        async def git_ref(owner: str, repo: str, ref: str) -> JSONResponse:
            sha = self._git("rev-parse", "--verify", "--quiet", f"refs/{ref}^{{commit}}").stdout.strip()
            if not sha:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            return JSONResponse({"ref": f"refs/{ref}", "object": {"sha": sha, "type": "commit"}})

        @app.get("/repos/{owner}/{repo}/compare/{basehead}")
        async def compare(owner: str, repo: str, basehead: str) -> JSONResponse:
            if self.files_status != 200:
                return JSONResponse({"message": "Server Error"}, status_code=self.files_status)
            base, _, head = basehead.partition("...")
            merge_base = self._git("merge-base", base, head).stdout.strip()
            if not merge_base:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            commits = self._git("rev-list", "--count", f"{merge_base}..{head}").stdout.strip()
            files = self._diff(base, head)[:COMPARE_FILES_MAX]
            return JSONResponse(
                {"merge_base_commit": {"sha": merge_base}, "total_commits": int(commits), "files": files}
            )

        @app.get("/repos/{owner}/{repo}/git/trees/{sha}")
        async def tree(owner: str, repo: str, sha: str, recursive: str | None = None) -> JSONResponse:
            listed = self._git("ls-tree", *(["-r", "-t"] if recursive else []), sha)
            if listed.returncode != 0:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            entries = []
            for line in listed.stdout.splitlines():
                meta, path = line.split("\t", 1)
                mode, kind, blob = meta.split()
                entries.append({"path": path, "mode": mode, "type": kind, "sha": blob})
            truncated = len(entries) > self.tree_entries_max
            return JSONResponse({"sha": sha, "tree": entries[: self.tree_entries_max], "truncated": truncated})

        # --- The Git Data API (a branch and a commit made without a clone) and opening a pull request ---
        @app.post("/repos/{owner}/{repo}/git/blobs")
        async def create_blob(owner: str, repo: str, request: Request) -> JSONResponse:
            body = await request.json()
            if body.get("encoding", "utf-8") not in ("utf-8", "base64") or not isinstance(body.get("content"), str):
                return validation_failed("Blob", "content", "invalid", "content and an encoding of utf-8 or base64")
            raw = base64.b64decode(body["content"]) if body.get("encoding") == "base64" else body["content"].encode()
            sha = (
                subprocess.run(
                    ["git", "-C", str(self.repo_root), "hash-object", "-w", "--stdin"], input=raw, capture_output=True
                )
                .stdout.decode()
                .strip()
            )
            return JSONResponse({"sha": sha, "url": f"/repos/{owner}/{repo}/git/blobs/{sha}"}, status_code=201)

        @app.post("/repos/{owner}/{repo}/git/trees")
        async def create_tree(owner: str, repo: str, request: Request) -> JSONResponse:
            body = await request.json()
            with tempfile.TemporaryDirectory() as tmp:
                index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
                if body.get("base_tree"):
                    if self._git("cat-file", "-t", body["base_tree"]).stdout.strip() != "tree":
                        return JSONResponse({"message": "Invalid tree info"}, status_code=422)
                    self._git_out("read-tree", body["base_tree"], env=index)
                for entry in body.get("tree") or []:
                    if entry.get("mode") not in ("100644", "100755", "040000", "160000", "120000"):
                        return JSONResponse(
                            {"message": f"Invalid tree info: mode {entry.get('mode')!r}"}, status_code=422
                        )
                    sha = entry.get("sha")
                    if "content" in entry:
                        sha = self._git_out("hash-object", "-w", "--stdin", stdin=entry["content"])
                    elif not sha or self._git("cat-file", "-t", sha).returncode != 0:
                        return JSONResponse({"message": "Invalid tree info"}, status_code=422)
                    cacheinfo = f"{entry['mode']},{sha},{entry['path']}"
                    self._git_out("update-index", "--add", "--cacheinfo", cacheinfo, env=index)
                tree = self._git_out("write-tree", env=index)
            return JSONResponse({"sha": tree, "tree": [], "truncated": False}, status_code=201)

        @app.post("/repos/{owner}/{repo}/git/commits")
        async def create_commit(owner: str, repo: str, request: Request) -> JSONResponse:
            body = await request.json()
            if not body.get("message") or not body.get("tree"):
                return validation_failed("Commit", "message", "missing_field", "message and tree are required")
            parents = body.get("parents") or []
            for sha in [body["tree"], *parents]:
                if self._git("cat-file", "-t", sha).returncode != 0:
                    return JSONResponse({"message": "Object does not exist"}, status_code=422)
            args = [arg for parent in parents for arg in ("-p", parent)]
            sha = self._git_out("commit-tree", body["tree"], *args, "-m", body["message"])
            return JSONResponse(self._commit(sha), status_code=201)

        @app.get("/repos/{owner}/{repo}/git/commits/{sha}")
        async def get_commit(owner: str, repo: str, sha: str) -> JSONResponse:
            if self._git("cat-file", "-t", sha).stdout.strip() != "commit":
                return JSONResponse({"message": "Not Found"}, status_code=404)
            return JSONResponse(self._commit(sha))

        @app.post("/repos/{owner}/{repo}/git/refs")
        async def create_ref(owner: str, repo: str, request: Request) -> JSONResponse:
            body = await request.json()
            ref, sha = str(body.get("ref") or ""), str(body.get("sha") or "")
            if not ref.startswith("refs/") or ref.count("/") < 2:
                message = "Reference name must start with 'refs/' and have at least two slashes."
                return JSONResponse({"message": message}, status_code=422)
            if self._git("cat-file", "-t", sha).stdout.strip() != "commit":
                return JSONResponse({"message": "Object does not exist"}, status_code=422)
            if self._git("rev-parse", "--verify", "--quiet", ref).returncode == 0:
                return JSONResponse({"message": "Reference already exists"}, status_code=422)
            self._git_out("update-ref", ref, sha)
            return JSONResponse({"ref": ref, "object": {"sha": sha, "type": "commit"}}, status_code=201)

        @app.patch("/repos/{owner}/{repo}/git/refs/{ref:path}")
        async def update_ref(owner: str, repo: str, ref: str, request: Request) -> JSONResponse:
            body = await request.json()
            old = self._git("rev-parse", "--verify", "--quiet", f"refs/{ref}").stdout.strip()
            sha = str(body.get("sha") or "")
            if not old:
                return JSONResponse({"message": "Reference does not exist"}, status_code=422)
            if self._git("cat-file", "-t", sha).stdout.strip() != "commit":
                return JSONResponse({"message": "Object does not exist"}, status_code=422)
            if self._git("merge-base", "--is-ancestor", old, sha).returncode != 0 and not body.get("force"):
                return JSONResponse({"message": "Update is not a fast forward"}, status_code=422)
            self._git_out("update-ref", f"refs/{ref}", sha)
            for number, (_base, head_ref) in self.pull_refs.items():
                if f"heads/{head_ref}" == ref and number not in self.closed:
                    self.pulls[number] = (self.pulls[number][0], sha)  # a push to the pull request's branch
            return JSONResponse({"ref": f"refs/{ref}", "object": {"sha": sha, "type": "commit"}})

        @app.post("/repos/{owner}/{repo}/pulls")
        async def create_pull(owner: str, repo: str, request: Request) -> JSONResponse:
            body = await request.json()
            head_ref, base_ref = str(body.get("head") or ""), str(body.get("base") or "")
            head = self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{head_ref}").stdout.strip()
            base = self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{base_ref}").stdout.strip()
            if not body.get("title") or not head or not base:
                return validation_failed("PullRequest", "head" if not head else "base", "invalid", "not a branch")
            if any(refs[1] == head_ref and n not in self.closed for n, refs in self.pull_refs.items()):
                message = f"A pull request already exists for {owner}:{head_ref}."
                return validation_failed("PullRequest", "head", "custom", message)
            if self._git("rev-list", "--count", f"{base}..{head}").stdout.strip() == "0":
                return validation_failed(
                    "PullRequest", "head", "custom", f"No commits between {base_ref} and {head_ref}"
                )
            number = max([*self.pulls, *self.issues, 0]) + 1
            self.pulls[number] = (base, head)
            self.pull_refs[number] = (base_ref, head_ref)
            # Opened with the installation token: the app's bot user is its author.
            self.pull_authors[number] = "evalbot[bot]"
            self.pull_bodies[number] = {"title": body["title"], "body": body.get("body")}
            return JSONResponse(self._pull(owner, repo, number), status_code=201)

        @app.get("/repos/{owner}/{repo}")
        async def repository(owner: str, repo: str, request: Request) -> Response:
            full_name = f"{owner}/{repo}"
            if request.state.user is not None:
                refused = self.oauth.repository_as_user(request.state.user, full_name)
                if refused is not None:
                    return refused
            return JSONResponse(self._repository(full_name))

        # --- Repositories by id (run pages; bot/web): a rename keeps the id ---
        @app.get("/repositories/{repository_id}")
        async def repository_by_id(repository_id: int, request: Request) -> Response:
            full_name = self.oauth.name_of(repository_id)
            if full_name is None:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            if request.state.user is not None:
                refused = self.oauth.repository_as_user(request.state.user, full_name)
                if refused is not None:
                    return refused
            return JSONResponse(self._repository(full_name))

        @app.get("/repos/{owner}/{repo}/issues")
        async def list_issues(
            owner: str, repo: str, state: str = "open", page: int = 1, per_page: int = 30
        ) -> JSONResponse:
            # GitHub lists pull requests among issues, marked with a `pull_request` key.
            pulls = [
                {
                    "number": n,
                    "title": f"pull request {n}",
                    "state": "open",
                    "pull_request": {},
                    "user": {"type": "User"},
                }
                for n in sorted(self.pulls)
            ]
            found = [i for i in [*self.issues.values(), *pulls] if state == "all" or i["state"] == state]
            return JSONResponse(_page(found, page, per_page))

        @app.post("/repos/{owner}/{repo}/issues")
        async def create_issue(owner: str, repo: str, request: Request) -> JSONResponse:
            body = await request.json()
            if not body.get("title"):
                return JSONResponse({"message": "title wasn't supplied"}, status_code=422)
            if refused := body_too_long("Issue", body.get("body")):
                return refused
            number = max([*self.pulls, *self.issues, 0]) + 1
            # Opened with the installation token: the app's bot user, and the app named.
            user = {"login": "evalbot[bot]", "type": "Bot"}
            app = {"id": int(self.app_id), "slug": "evalbot"}
            issue = {"number": number, "title": body["title"], "body": body.get("body"), "state": "open", "user": user}
            issue["performed_via_github_app"] = app
            self.issues[number] = {**issue, "edits": 0}
            return JSONResponse(issue, status_code=201)

        @app.patch("/repos/{owner}/{repo}/issues/{number}")
        async def update_issue(owner: str, repo: str, number: int, request: Request) -> JSONResponse:
            if number not in self.issues:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            body = await request.json()
            if refused := body_too_long("Issue", body.get("body")):
                return refused
            issue = self.issues[number]
            issue.update({k: v for k, v in body.items() if k in ("title", "body", "state")}, edits=issue["edits"] + 1)
            return JSONResponse(issue)

        @app.get("/repos/{owner}/{repo}/collaborators/{user}/permission")
        async def permission(owner: str, repo: str, user: str) -> JSONResponse:
            role = self.permissions.get(user, "read")
            permission = _LEGACY_PERMISSION.get(role, role)
            return JSONResponse({"permission": permission, "role_name": role, "user": {"login": user}})

        @app.get("/orgs/{org}/teams/{team}/memberships/{user}")
        async def membership(org: str, team: str, user: str) -> JSONResponse:
            if user not in self.teams.get(f"{org}/{team}", set()):
                return JSONResponse({"message": "Not Found"}, status_code=404)
            return JSONResponse({"state": "active", "role": "member"})

        @app.post("/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions")
        async def react(owner: str, repo: str, comment_id: int, request: Request) -> JSONResponse:
            content = (await request.json())["content"]
            self.reactions.append((comment_id, content))
            return JSONResponse({"id": next(self._ids), "content": content}, status_code=201)

        @app.get("/repos/{owner}/{repo}/pulls/{number}/files")
        async def pull_files(owner: str, repo: str, number: int, page: int = 1, per_page: int = 30) -> JSONResponse:
            if self.files_status != 200:
                return JSONResponse({"message": "Server Error"}, status_code=self.files_status)
            base, head = self.pulls[number]
            files = self._diff(base, head)[:PULL_FILES_MAX]
            return JSONResponse(_page(files, page, per_page))

        @app.get("/repos/{owner}/{repo}/commits/{sha}/check-runs")
        async def list_runs(
            owner: str, repo: str, sha: str, check_name: str | None = None, app_id: int | None = None
        ) -> JSONResponse:
            runs = [
                r
                for r in self.check_runs.values()
                if r["head_sha"] == sha and check_name in (None, r["name"]) and app_id in (None, r["app"]["id"])
            ]
            runs.sort(key=lambda r: -int(r["id"]))
            return JSONResponse({"total_count": len(runs), "check_runs": runs})

        @app.post("/repos/{owner}/{repo}/check-runs")
        async def create_run(owner: str, repo: str, request: Request) -> JSONResponse:
            body = await request.json()
            if refused := output_too_big(body):
                return refused
            problem = self._invalid_run(body, creating=True)
            if problem:
                return JSONResponse({"message": problem}, status_code=422)
            app = {"id": int(self.app_id), "slug": "evalbot"}
            run = {"id": next(self._ids), "status": "queued", "conclusion": None, "output": None, "app": app, **body}
            if body.get("conclusion"):
                run["status"] = "completed"
            self.check_runs[run["id"]] = run
            self._keep_annotations(run["id"], body)
            return JSONResponse(run, status_code=201)

        @app.patch("/repos/{owner}/{repo}/check-runs/{run_id}")
        async def update_run(owner: str, repo: str, run_id: int, request: Request) -> JSONResponse:
            body = await request.json()
            if refused := output_too_big(body):
                return refused
            problem = self._invalid_run(body, creating=False)
            if problem:
                return JSONResponse({"message": problem}, status_code=422)
            run = self.check_runs[run_id]
            if run["status"] == "completed" and body.get("status", "completed") != "completed":
                # A completed run's status no longer changes (GitHub: a re-run is a new check run); the fake
                # refuses loudly where GitHub may leave the run as it was.
                return validation_failed("CheckRun", "status", "invalid", "a completed check run cannot be reopened")
            run.update(body)
            if body.get("conclusion"):
                run["status"] = "completed"
            self._keep_annotations(run_id, body)
            return JSONResponse(run)

        @app.get("/repos/{owner}/{repo}/check-runs/{run_id}/annotations")
        async def list_annotations(
            owner: str, repo: str, run_id: int, page: int = 1, per_page: int = 30
        ) -> JSONResponse:
            found = self.annotations.get(run_id, [])
            return JSONResponse(_page(found, page, per_page))

        @app.get("/repos/{owner}/{repo}/issues/{number}/comments")
        async def list_comments(owner: str, repo: str, number: int, page: int = 1, per_page: int = 30) -> JSONResponse:
            found = [c for c in self.comments.values() if c["issue"] == number]
            return JSONResponse(_page(found, page, per_page))

        @app.post("/repos/{owner}/{repo}/issues/{number}/comments")
        async def create_comment(owner: str, repo: str, number: int, request: Request) -> JSONResponse:
            body = (await request.json())["body"]
            if refused := body_too_long("IssueComment", body):
                return refused
            # Written with the installation token: GitHub shows the app's bot user as the author and
            # names the app in `performed_via_github_app`.
            comment = self.add_comment(number, body, "evalbot[bot]", "Bot", app_id=int(self.app_id))
            return JSONResponse(comment, status_code=201)

        @app.patch("/repos/{owner}/{repo}/issues/comments/{comment_id}")
        async def edit_comment(owner: str, repo: str, comment_id: int, request: Request) -> JSONResponse:
            body = (await request.json())["body"]
            if refused := body_too_long("IssueComment", body):
                return refused
            comment = self.comments[comment_id]
            comment.update(body=body, edits=comment["edits"] + 1)
            return JSONResponse(comment)

        app.include_router(self.oauth.router())
        app.include_router(self.deliveries.router())
        return app

    def _diff(self, base: str, head: str) -> list[dict[str, Any]]:
        """What `base...head` changes, as GitHub lists files (by path)."""
        out = self._git("diff", "--name-status", "--find-renames", f"{base}...{head}").stdout
        status = {"A": "added", "D": "removed"}
        files = []
        for line in out.splitlines():
            code, *paths = line.split("\t")
            if code.startswith("R"):
                # GitHub lists a rename once, under its new name, with the old one beside it.
                files.append({"filename": paths[1], "previous_filename": paths[0], "status": "renamed"})
            else:
                files.append({"filename": paths[0], "status": status.get(code, "modified")})
        return sorted(files, key=lambda f: str(f["filename"]))

    def _repository(self, full_name: str) -> dict[str, Any]:
        return {
            "id": self.oauth.repository_id(full_name),
            "full_name": full_name,
            "default_branch": self.default_branch,
            "private": full_name in self.oauth.private,
            "html_url": f"https://github.com/{full_name}",
            "clone_url": f"{self.clone_base}/{full_name}.git",
        }

    def _pull(self, owner: str, repo: str, number: int) -> dict[str, Any]:
        base, head = self.pulls[number]
        base_ref, head_ref = self.pull_refs.get(number, ("main", "feature"))
        base_repo = {
            "id": self.oauth.repository_id(f"{owner}/{repo}"),
            "full_name": f"{owner}/{repo}",
            "html_url": f"https://github.com/{owner}/{repo}",
            "default_branch": self.default_branch,
        }
        fork = {"full_name": f"fork-owner/{repo}", "html_url": f"https://github.com/fork-owner/{repo}"}
        head_repo = fork if number in self.fork_pulls else base_repo
        author = self.pull_authors.get(number, "Codertocat")
        return {
            "number": number,
            "state": "closed" if number in self.closed else "open",
            "draft": number in self.drafts,
            "user": {"login": author, "type": "Bot" if author.endswith("[bot]") else "User"},
            # `base.sha` is the base's tip when the head was last pushed, not now (GitHub's behaviour).
            "base": {"sha": base, "ref": base_ref, "repo": base_repo},
            "head": {"sha": head, "ref": head_ref, "repo": head_repo},
            "changed_files": len(self._diff(base, head)),
        }

    def _commit(self, sha: str) -> dict[str, Any]:
        """A commit as the Git Data API shows it: its tree, parents and message."""
        tree, parents, message = self._git_out("show", "-s", "--format=%T%n%P%n%B", sha).split("\n", 2)
        return {
            "sha": sha,
            "tree": {"sha": tree},
            "parents": [{"sha": p} for p in parents.split()],
            "message": message.strip(),
        }

    def _entry(self, ref: str, path: str) -> tuple[str, str, str, int] | None:
        """(mode, type, sha, size) of `path`'s tree entry at `ref`."""
        listed = self._git("--literal-pathspecs", "ls-tree", "-l", "-z", ref, "--", path).stdout
        for line in listed.split("\0"):
            meta, _tab, name = line.partition("\t")
            if name == path:
                mode, kind, sha, size = meta.split()
                return mode, kind, sha, 0 if size == "-" else int(size)
        return None

    def _contents(self, base_url: str, path: str, ref: str, accept: str) -> Response:
        """GET contents as GitHub documents it: a file's object (content inline up to 1 MB, else
        encoding "none") or raw bytes; a directory's listing (an array, or an object with `entries`
        under the object media type); a submodule's or a broken symlink's object; and a symlink to a
        file in the repository answered as that file, under the target's own path."""
        entry = self._entry(ref, path)
        if entry is None:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        mode, kind, sha, size = entry
        about = {"name": path.rsplit("/", 1)[-1], "path": path, "sha": sha, "size": size, "url": f"{base_url}/{path}"}
        if mode == "120000":
            target = self._git("cat-file", "blob", sha).stdout
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            followed = self._entry(ref, resolved) if not resolved.startswith("..") else None
            if followed is None or followed[1] != "blob" or followed[0] == "120000":
                return JSONResponse({**about, "type": "symlink", "target": target})
            path, (mode, kind, sha, size) = resolved, followed
            about = {**about, "name": path.rsplit("/", 1)[-1], "path": path, "sha": sha, "size": size}
        if kind == "commit":
            return JSONResponse({**about, "type": "submodule", "size": 0, "submodule_git_url": "https://example.com/x"})
        if kind == "tree":
            listing = self._git("ls-tree", "-l", ref, f"{path}/").stdout.splitlines()
            entries = [{"name": line.split("\t", 1)[1].rsplit("/", 1)[-1], "type": "file"} for line in listing]
            if "object" in accept:
                return JSONResponse({**about, "type": "dir", "size": 0, "entries": entries})
            return JSONResponse(entries)
        blob = subprocess.run(["git", "-C", str(self.repo_root), "cat-file", "blob", sha], capture_output=True).stdout
        if "raw" in accept:
            return Response(blob, media_type="application/vnd.github.raw")
        if size > 1_000_000 and "object" not in accept:
            return JSONResponse({"message": "This API returns blobs up to 1 MB in size."}, status_code=403)
        inline = size <= 1_000_000
        content = base64.b64encode(blob).decode() if inline else ""
        return JSONResponse({**about, "type": "file", "encoding": "base64" if inline else "none", "content": content})

    def _keep_annotations(self, run_id: int, body: dict[str, Any]) -> None:
        notes = (body.get("output") or {}).get("annotations")
        if notes:
            self.annotation_requests.append(len(notes))
            self.annotations.setdefault(run_id, []).extend(dict(note) for note in notes)

    @staticmethod
    def _invalid_run(body: dict[str, Any], creating: bool) -> str | None:
        if creating and (not body.get("name") or not body.get("head_sha")):
            return "name and head_sha are required"
        if "status" in body and body["status"] not in STATUSES:
            return f"status {body['status']!r} is not a member of {sorted(STATUSES)}"
        if "conclusion" in body and body["conclusion"] not in CONCLUSIONS:
            return f"conclusion {body['conclusion']!r} is not a member of {sorted(CONCLUSIONS)}"
        if body.get("status") in GITHUB_ONLY_STATUSES:
            return "Only GitHub Actions can set a status of waiting, pending, or requested."
        if body.get("conclusion") in GITHUB_ONLY_CONCLUSIONS:
            return "You cannot change a check run conclusion to stale, only GitHub can set this."
        if body.get("status") == "completed" and not body.get("conclusion"):
            return "conclusion is required when status is completed"
        actions = body.get("actions") or []
        if len(actions) > 3:
            return "actions: no more than 3 items"
        for action in actions:
            limits = {"label": 20, "description": 40, "identifier": 20}
            if any(not action.get(k) or len(action[k]) > n for k, n in limits.items()):
                return "actions: label ≤ 20, description ≤ 40 and identifier ≤ 20 characters are required"
        out = body.get("output") or {}
        if out and (not out.get("title") or not out.get("summary")):
            return "output needs title and summary"
        if len(out.get("title") or "") > 255:
            return "output.title is too long"
        notes = out.get("annotations") or []
        if len(notes) > 50:
            return "output.annotations: no more than 50 items per request"
        for note in notes:
            if not all(note.get(k) for k in ("path", "start_line", "end_line", "annotation_level", "message")):
                return "annotations need path, start_line, end_line, annotation_level and message"
            if note["annotation_level"] not in ("notice", "warning", "failure"):
                return f"annotation_level {note['annotation_level']!r} is not one of notice, warning, failure"
            # GitHub documents an annotation's message (and raw_details) as at most 64 KB.
            if any(len((note.get(k) or "").encode()) > 64 * 1024 for k in ("message", "raw_details")):
                return "annotations: message and raw_details are at most 64 KB"
        return None

    def start(self) -> FakeGitHub:
        self._http.start()
        self.port = self._http.port
        return self

    def stop(self) -> None:
        self._http.stop()
