"""The pipeline's `Source` over the GitHub REST API, and what a job asks GitHub about pull requests."""

from __future__ import annotations

import base64
import hashlib
import weakref
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from githubkit import GitHub
from githubkit.exception import RequestFailed

from bot.errors import FileTooLargeError, InputError
from bot.github.constants import COMMIT_SHA
from bot.pipeline.source import LfsPointer, check_path, lfs_pointer, not_a_file

# GitHub's compare API lists at most 300 changed files for the whole comparison; at that many the list
# may be cut, so the diff is taken from the two trees instead.
COMPARE_MAX_FILES = 300
# The object media type says what a path is (file, dir, symlink, submodule) and its size, with the
# content inline up to 1 MB; the raw one returns files up to 100 MB but answers a directory or a
# submodule with JSON that would be taken for the file's text.
_OBJECT = "application/vnd.github.object+json"
_RAW = "application/vnd.github.raw+json"
_KINDS = {"dir": "directory", "symlink": "symbolic link", "submodule": "submodule"}
# A file at a commit SHA never changes: one job's client reads it once (the base's `.evalbot.yml` is
# read for the policy, for the plan and again when publishing). Small files only, kept as long as the
# client, which is one job's.
_CACHED_MAX_BYTES = 1_000_000
_READS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], str | None]] = weakref.WeakKeyDictionary()


class GitHubSource:
    """Files of `owner/repo` at any commit, and the diff between two commits."""

    def __init__(self, gh: GitHub[Any], owner: str, repo: str):
        self.gh, self.owner, self.repo = gh, owner, repo
        self._base = f"/repos/{owner}/{repo}"
        self._compares: dict[tuple[str, str], dict[str, Any]] = {}

    async def read_text(self, ref: str, path: str, max_bytes: int) -> str | None:
        # The pipeline checked the path already; checked again here because this request carries a
        # token that reads every repository of the installation.
        check_path(path)
        if not COMMIT_SHA.fullmatch(ref):
            return await self._read_text(ref, path, max_bytes)
        reads = _READS.setdefault(self.gh, {})
        key = (f"{self._base}@{ref}", path)
        if key in reads:
            text = reads[key]
            if text is not None and len(text.encode()) > max_bytes:
                raise FileTooLargeError(path, len(text.encode()), max_bytes)
            return text
        text = await self._read_text(ref, path, max_bytes)
        if text is None or len(text) <= _CACHED_MAX_BYTES:
            reads[key] = text
        return text

    async def _read_text(self, ref: str, path: str, max_bytes: int) -> str | None:
        url = f"{self._base}/contents/" + "/".join(quote(s, safe="") for s in path.split("/"))
        try:
            response = await self.gh.arequest("GET", url, params={"ref": ref}, headers={"Accept": _OBJECT})
        except RequestFailed as exc:
            if exc.response.status_code == 404:
                return None
            raise
        entry = response.json()
        kind = entry.get("type") if isinstance(entry, dict) else "dir"
        if kind == "file" and entry.get("path") != path:
            # GitHub follows a symbolic link to a file and answers with the target's own path.
            kind = "symlink"
        if kind != "file":
            raise not_a_file(path, _KINDS.get(str(kind), f"{kind} entry"))
        size = int(entry["size"])
        if size > max_bytes:
            raise FileTooLargeError(path, size, max_bytes)
        if entry.get("encoding") == "base64":
            text = base64.b64decode(entry["content"]).decode("utf-8", errors="replace")
            pointer = lfs_pointer(text)
            return text if pointer is None else await self._lfs_object(path, pointer, max_bytes)
        # Over 1 MB the object answer has no content ("encoding": "none"): the raw one has it.
        raw = await self.gh.arequest("GET", url, params={"ref": ref}, headers={"Accept": _RAW})
        return raw.content.decode("utf-8", errors="replace")

    async def _lfs_object(self, path: str, pointer: LfsPointer, max_bytes: int) -> str:
        """The content of a Git LFS object, through the repository's LFS batch API (basic transfer).

        The installation token goes to the repository's own LFS endpoint only; the download goes to
        the address the batch answer gives, with the headers it gives and nothing else.

        Raises:
            FileTooLargeError: the object is over `max_bytes` (the pointer says so before any download).
            InputError: the LFS server does not give the object, or gives other bytes than the pointer's.
        """
        if pointer.size > max_bytes:
            raise FileTooLargeError(path, pointer.size, max_bytes)
        repository = (await self.gh.arequest("GET", self._base)).json()
        # git-lfs's server discovery: `<clone URL>/info/lfs` (github.com/owner/repo.git/info/lfs).
        batch_url = f"{repository['clone_url']}/info/lfs/objects/batch"
        request = {
            "operation": "download",
            "transfers": ["basic"],
            "objects": [{"oid": pointer.oid, "size": pointer.size}],
            "hash_algo": "sha256",
        }
        async with httpx.AsyncClient(timeout=30.0) as http:
            answer = await http.post(
                batch_url, json=request, headers=_LFS_HEADERS, auth=_LfsAuth(self.gh.auth.get_auth_flow(self.gh))
            )
            if answer.status_code != 200:
                raise InputError(f"stored in Git LFS, and GitHub's LFS server answered {answer.status_code}", path)
            objects: list[dict[str, Any]] = answer.json().get("objects") or []
            found = next((o for o in objects if o.get("oid") == pointer.oid), {})
            download = (found.get("actions") or {}).get("download")
            if not isinstance(download, dict) or not download.get("href"):
                error = (found.get("error") or {}).get("message", "no download offered")
                raise InputError(f"stored in Git LFS, and GitHub's LFS server has no such object: {error}", path)
            if urlsplit(str(download["href"])).scheme not in ("https", "http"):
                raise InputError("stored in Git LFS, and the LFS download address is not a web address", path)
            content = await _download(http, str(download["href"]), download.get("header") or {}, pointer, path)
        return content.decode("utf-8", errors="replace")

    async def changed_paths(self, base: str, head: str) -> list[str]:
        """What `base...head` changes (renames with both names), from these two SHAs only.

        Never the pull request's file list: it shows the pull request's newest head, not this job's,
        and stops at 3,000 files. A list that may be incomplete is never returned.

        Raises:
            InputError: when GitHub cannot give the complete list (trees past its own limits).
        """
        compare = await self._compare(base, head)
        files = compare.get("files") or []
        if len(files) < COMPARE_MAX_FILES:
            renamed = {f["previous_filename"] for f in files if f.get("previous_filename")}
            return sorted({f["filename"] for f in files} | renamed)
        # Three dots: the head's changes since the merge base, as the pull request's diff shows them.
        merge_base = compare["merge_base_commit"]["sha"]
        before, after = await self.tree(merge_base), await self.tree(head)
        return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))

    async def merge_base(self, base: str, head: str) -> str:
        return str((await self._compare(base, head))["merge_base_commit"]["sha"])

    async def _compare(self, base: str, head: str) -> dict[str, Any]:
        """GitHub's comparison `base...head`, asked once per source (the file list and the merge base)."""
        if (base, head) not in self._compares:
            response = await self.gh.arequest("GET", f"{self._base}/compare/{base}...{head}")
            self._compares[(base, head)] = dict(response.json())
        return self._compares[(base, head)]

    async def list_files(self, ref: str, directory: str) -> list[str]:
        if directory:
            check_path(directory)
        prefix = f"{directory}/" if directory else ""
        return sorted(path for path in await self.tree(ref) if path.startswith(prefix))

    async def tree(self, sha: str) -> dict[str, str]:
        """Every file of commit `sha`: path -> blob SHA.

        Raises:
            InputError: GitHub truncated the tree (too many files to list whole).
        """
        response = await self.gh.arequest("GET", f"{self._base}/git/trees/{sha}", params={"recursive": "1"})
        tree = response.json()
        if tree.get("truncated"):
            raise InputError(
                f"the diff has more files than GitHub lists and the tree of {sha[:7]} is too large to read "
                "whole: which suites changed is unknown"
            )
        return {entry["path"]: entry["sha"] for entry in tree["tree"] if entry["type"] != "tree"}


_LFS_HEADERS = {"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"}


class _LfsAuth(httpx.Auth):
    """The installation's token as GitHub's LFS server takes it: Basic `x-access-token:<token>`.

    githubkit's own flow makes (and renews) the token; this only rewrites the header it sets.
    """

    def __init__(self, installation: httpx.Auth):
        self.installation = installation

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self.installation.async_auth_flow(request)
        outgoing = await flow.__anext__()
        while outgoing is not request:
            # A token request to the API first (githubkit's cache was empty or expired).
            response = yield outgoing
            await response.aread()
            outgoing = await flow.asend(response)
        token = request.headers["Authorization"].removeprefix("token ")
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        request.headers["Authorization"] = f"Basic {basic}"
        yield request


async def _download(
    http: httpx.AsyncClient, href: str, headers: dict[str, Any], pointer: LfsPointer, path: str
) -> bytes:
    """The object's bytes, read no further than its size, checked against the pointer's SHA-256."""
    received = bytearray()
    async with http.stream("GET", href, headers={str(k): str(v) for k, v in headers.items()}) as response:
        if response.status_code != 200:
            raise InputError(f"stored in Git LFS, and its download answered {response.status_code}", path)
        async for chunk in response.aiter_bytes():
            received += chunk
            if len(received) > pointer.size:
                raise InputError("stored in Git LFS, and its download is larger than the pointer says", path)
    if hashlib.sha256(received).hexdigest() != pointer.oid:
        raise InputError("stored in Git LFS, and the downloaded object does not match the pointer's SHA-256", path)
    return bytes(received)


async def merge_base(gh: GitHub[Any], owner: str, repo: str, base: str, head: str) -> str:
    """The commit `base...head` is compared from: where the head's changes start."""
    response = await gh.arequest("GET", f"/repos/{owner}/{repo}/compare/{base}...{head}")
    return str(response.json()["merge_base_commit"]["sha"])


async def get_pull_request(gh: GitHub[Any], owner: str, repo: str, number: int) -> dict[str, Any]:
    """The pull request as the REST API gives it (head and base SHAs and repositories, author)."""
    response = await gh.arequest("GET", f"/repos/{owner}/{repo}/pulls/{number}")
    return dict(response.json())


async def branch_tip(gh: GitHub[Any], owner: str, repo: str, branch: str) -> str:
    """The commit branch `branch` points at now (`pull_request.base.sha` is its tip at the last push)."""
    response = await gh.arequest("GET", f"/repos/{owner}/{repo}/git/ref/heads/{quote(branch, safe='/')}")
    return str(response.json()["object"]["sha"])


async def open_pulls_with_head(gh: GitHub[Any], owner: str, repo: str, sha: str) -> list[dict[str, Any]]:
    """Every open pull request whose head is `sha`, by number.

    All open pull requests are listed: `head=owner:branch` misses another branch at the same commit,
    and `commits/{sha}/pulls` leaves out open pull requests once the commit is on the default branch.
    """
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        response = await gh.arequest(
            "GET", f"/repos/{owner}/{repo}/pulls", params={"state": "open", "per_page": 100, "page": page}
        )
        pulls = response.json()
        found += [p for p in pulls if (p.get("head") or {}).get("sha") == sha]
        if len(pulls) < 100:
            return sorted(found, key=lambda p: int(p["number"]))
        page += 1


def is_fork(pull_request: dict[str, Any]) -> bool:
    """Opened from another repository (or from one since deleted, which GitHub reports as null)."""
    head_repo = (pull_request.get("head") or {}).get("repo") or {}
    base_repo = (pull_request.get("base") or {}).get("repo") or {}
    return not head_repo or head_repo.get("full_name") != base_repo.get("full_name")
