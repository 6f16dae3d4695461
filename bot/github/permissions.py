"""Who may do what: write access (collaborator permission) and approvers (logins and org teams)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from githubkit import GitHub
from githubkit.exception import RequestFailed

WRITE_PERMISSIONS = {"admin", "maintain", "write"}
# GitHub's answer to a request the installation has no permission for.
NOT_ACCESSIBLE = "Resource not accessible by integration"
# Where an app permission is set (app settings → Permissions & events): its section and label.
_SETTINGS = {
    "members": ("Organization", "Members"),
    "checks": ("Repository", "Checks"),
    "contents": ("Repository", "Contents"),
    "issues": ("Repository", "Issues"),
    "pull_requests": ("Repository", "Pull requests"),
    "metadata": ("Repository", "Metadata"),
}
_LEVELS = {"read": "Read-only", "write": "Read and write", "admin": "Admin"}


@dataclass(frozen=True)
class Permission:
    """An app permission GitHub asked for, and where its setting is."""

    name: str  # as the API names it, e.g. "members"
    level: str  # "read", "write", "admin"
    section: str  # "Organization", "Repository", or "" when not known here
    label: str  # as the settings page shows it, e.g. "Members"
    level_label: str  # e.g. "Read-only"


def missing_permissions(exc: RequestFailed) -> list[Permission] | None:
    """What the installation lacks when GitHub refused `exc`'s request for a missing permission (403
    "Resource not accessible by integration"), from `x-accepted-github-permissions`: one entry per
    permission of the first set GitHub accepts (sets are `;`-separated, permissions in a set `,`).
    None when the refusal was something else."""
    response = exc.response
    if response.status_code != 403:
        return None
    try:
        message = response.json().get("message", "")
    except ValueError:
        return None
    if message != NOT_ACCESSIBLE:
        return None
    accepted = response.headers.get("x-accepted-github-permissions", "")
    first = accepted.split(";")[0]
    found = []
    for item in first.split(","):
        name, _, level = item.strip().partition("=")
        if name:
            section, label = _SETTINGS.get(name, ("", name))
            found.append(Permission(name, level or "read", section, label, _LEVELS.get(level, level or "read")))
    return found


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
