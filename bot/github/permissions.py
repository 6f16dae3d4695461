"""Who may do what: write access (collaborator permission) and approvers (logins and org teams)."""

from __future__ import annotations

from typing import Any

from githubkit import GitHub
from githubkit.exception import RequestFailed

WRITE_PERMISSIONS = {"admin", "maintain", "write"}


async def has_write_access(gh: GitHub[Any], owner: str, repo: str, user: str) -> bool:
    try:
        response = await gh.arequest("GET", f"/repos/{owner}/{repo}/collaborators/{user}/permission")
    except RequestFailed as exc:
        if exc.response.status_code == 404:
            return False
        raise
    data = response.json()
    # `role_name` tells maintain apart; `permission` folds it into "write".
    return bool({data.get("permission"), data.get("role_name")} & WRITE_PERMISSIONS)


async def is_approver(gh: GitHub[Any], approvers: list[str], user: str) -> bool:
    """`user` is listed by login, or is an active member of a listed `@org/team`."""
    login = user.casefold()
    for entry in approvers:
        name = entry.strip().lstrip("@")
        if "/" not in name:
            if name.casefold() == login:
                return True
            continue
        org, team = name.split("/", 1)
        try:
            response = await gh.arequest("GET", f"/orgs/{org}/teams/{team}/memberships/{user}")
        except RequestFailed as exc:
            if exc.response.status_code == 404:
                continue
            raise
        if response.json().get("state") == "active":
            return True
    return False
