"""The pipeline's `Source` over the GitHub REST API: file contents at a SHA and a pull request's files."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from githubkit import GitHub
from githubkit.exception import RequestFailed

from bot.errors import FileTooLargeError
from bot.pipeline.source import check_path, not_a_file

# The object media type says what a path is (file, dir, symlink, submodule) and its size, with the
# content inline up to 1 MB; the raw one returns files up to 100 MB but answers a directory or a
# submodule with JSON that would be taken for the file's text.
_OBJECT = "application/vnd.github.object+json"
_RAW = "application/vnd.github.raw+json"
_KINDS = {"dir": "directory", "symlink": "symbolic link", "submodule": "submodule"}


class GitHubSource:
    """Files of `owner/repo` as pull request `pr_number` changes them."""

    def __init__(self, gh: GitHub[Any], owner: str, repo: str, pr_number: int):
        self.gh, self.owner, self.repo, self.pr_number = gh, owner, repo, pr_number

    async def read_text(self, ref: str, path: str, max_bytes: int) -> str | None:
        # The pipeline checked the path already; checked again here because this request carries a
        # token that reads every repository of the installation.
        check_path(path)
        url = f"/repos/{self.owner}/{self.repo}/contents/" + "/".join(quote(s, safe="") for s in path.split("/"))
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
            return base64.b64decode(entry["content"]).decode("utf-8", errors="replace")
        # Over 1 MB the object answer has no content ("encoding": "none"): the raw one has it.
        raw = await self.gh.arequest("GET", url, params={"ref": ref}, headers={"Accept": _RAW})
        return raw.content.decode("utf-8", errors="replace")

    async def changed_paths(self, base: str, head: str) -> list[str]:
        # The pull request's own file list is what its diff shows (base...head), renames with both names.
        paths: set[str] = set()
        page = 1
        while True:
            response = await self.gh.arequest(
                "GET",
                f"/repos/{self.owner}/{self.repo}/pulls/{self.pr_number}/files",
                params={"per_page": 100, "page": page},
            )
            files = response.json()
            for file in files:
                paths.add(file["filename"])
                if file.get("previous_filename"):
                    paths.add(file["previous_filename"])
            if len(files) < 100:
                return sorted(paths)
            page += 1


async def get_pull_request(gh: GitHub[Any], owner: str, repo: str, number: int) -> dict[str, Any]:
    """The pull request as the REST API gives it (head and base SHAs and repositories, author)."""
    response = await gh.arequest("GET", f"/repos/{owner}/{repo}/pulls/{number}")
    return dict(response.json())


def is_fork(pull_request: dict[str, Any]) -> bool:
    """Opened from another repository (or from one since deleted, which GitHub reports as null)."""
    head_repo = (pull_request.get("head") or {}).get("repo") or {}
    base_repo = (pull_request.get("base") or {}).get("repo") or {}
    return not head_repo or head_repo.get("full_name") != base_repo.get("full_name")
