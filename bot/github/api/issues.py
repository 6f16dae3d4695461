"""Issues the app keeps open, one per title: found again and updated instead of opened twice."""

from __future__ import annotations

from typing import Any

from githubkit import GitHub

from bot.github.constants import MAX_BODY_CHARS

# Open issues looked through for the app's own (GitHub lists pull requests among them too).
_MAX_PAGES = 10


async def find_issue(gh: GitHub[Any], owner: str, repo: str, title: str, app_id: str | None) -> int | None:
    """The number of the open issue titled `title` that this app opened."""
    for page in range(1, _MAX_PAGES + 1):
        response = await gh.arequest(
            "GET", f"/repos/{owner}/{repo}/issues", params={"state": "open", "per_page": 100, "page": page}
        )
        issues = response.json()
        for issue in issues:
            # Only this app's (GitHub names it in `performed_via_github_app`): anyone, another app
            # included, can open an issue with the same title.
            app = issue.get("performed_via_github_app") or {}
            ours = app_id is not None and str(app.get("id")) == str(app_id)
            if ours and "pull_request" not in issue and issue.get("title") == title:
                return int(issue["number"])
        if len(issues) < 100:
            return None
    return None


async def upsert_issue(
    gh: GitHub[Any], owner: str, repo: str, title: str, body: str, app_id: str | None
) -> tuple[int, bool]:
    """Update the app's open issue `title` with `body`, or open it; (number, whether it was opened)."""
    body = body if len(body) <= MAX_BODY_CHARS else body[: MAX_BODY_CHARS - 1] + "…"
    number = await find_issue(gh, owner, repo, title, app_id)
    if number is not None:
        await gh.arequest("PATCH", f"/repos/{owner}/{repo}/issues/{number}", json={"body": body})
        return number, False
    created = await gh.arequest("POST", f"/repos/{owner}/{repo}/issues", json={"title": title, "body": body})
    return int(created.json()["number"]), True
