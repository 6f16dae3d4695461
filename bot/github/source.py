"""The pipeline's `Source` over the GitHub REST API: file contents at a SHA and a pull request's files."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from githubkit import GitHub
from githubkit.exception import RequestFailed


class GitHubSource:
    """Files of `owner/repo` as pull request `pr_number` changes them."""

    def __init__(self, gh: GitHub[Any], owner: str, repo: str, pr_number: int):
        self.gh, self.owner, self.repo, self.pr_number = gh, owner, repo, pr_number

    async def read_text(self, ref: str, path: str) -> str | None:
        try:
            response = await self.gh.arequest(
                "GET",
                f"/repos/{self.owner}/{self.repo}/contents/{quote(path)}",
                params={"ref": ref},
                # The raw media type returns files up to 100 MB; the JSON one stops at 1 MB.
                headers={"Accept": "application/vnd.github.raw+json"},
            )
        except RequestFailed as exc:
            if exc.response.status_code == 404:
                return None
            raise
        return response.content.decode("utf-8", errors="replace")

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
