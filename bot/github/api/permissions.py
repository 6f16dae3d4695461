"""Who may do what: write access (collaborator permission) and approvers (logins and org teams)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
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
# A level grants those below it.
_RANK = {"read": 1, "write": 2, "admin": 3}
# The permissions each installation token was issued with, by the token's SHA-256 (not the token: no
# second copy of a secret), from GitHub's answer to the token request. Tokens live an hour: the
# oldest are forgotten past this many.
_GRANTED: OrderedDict[str, dict[str, str]] = OrderedDict()
_GRANTED_MAX = 1_000


@dataclass(frozen=True)
class Permission:
    """An app permission GitHub asked for, and where its setting is."""

    name: str  # as the API names it, e.g. "members"
    level: str  # "read", "write", "admin"
    section: str  # "Organization", "Repository", or "" when not known here
    label: str  # as the settings page shows it, e.g. "Members"
    level_label: str  # e.g. "Read-only"


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def remember_granted(response: httpx.Response) -> None:
    """An httpx response hook: GitHub's answer to an installation token request lists the permissions
    the installation granted; kept by token, so a refusal can be compared with them."""
    request = response.request
    if request.method != "POST" or not request.url.path.endswith("/access_tokens") or response.status_code != 201:
        return
    await response.aread()
    try:
        data = response.json()
    except ValueError:
        return
    token, granted = data.get("token"), data.get("permissions")
    if isinstance(token, str) and isinstance(granted, dict):
        key = _token_key(token)
        _GRANTED[key] = {str(name): str(level) for name, level in granted.items()}
        _GRANTED.move_to_end(key)
        while len(_GRANTED) > _GRANTED_MAX:
            _GRANTED.popitem(last=False)


def _granted_to(request: httpx.Request) -> dict[str, str] | None:
    """The permissions of the token `request` was made with, when its issue was seen."""
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    return _GRANTED.get(_token_key(token)) if scheme.lower() == "token" and token else None


def _permission(name: str, level: str) -> Permission:
    section, label = _SETTINGS.get(name, ("", name))
    return Permission(name, level, section, label, _LEVELS.get(level, level))


def closest_missing(accepted: str, granted: Mapping[str, str] | None) -> list[Permission]:
    """What to grant for a request GitHub accepts with any one of the `accepted` sets (GitHub's
    `x-accepted-github-permissions`: sets `;`-separated, the permissions of a set `,`-separated, as
    `name=level`). With the permissions the token was `granted` known: only what the set closest to
    satisfied lacks (the first of equals). Unknown, or a set seemingly satisfied (the installation's
    permissions changed since the token was issued): the first set whole, as GitHub names it."""
    sets = []
    for part in accepted.split(";"):
        items = [item.strip().partition("=") for item in part.split(",")]
        found = [_permission(name, level or "read") for name, _, level in items if name]
        if found:
            sets.append(found)
    if not sets:
        return []
    if granted is None:
        return sets[0]
    lacking = [[p for p in found if _RANK.get(granted.get(p.name, ""), 0) < _RANK.get(p.level, 1)] for found in sets]
    return min(lacking, key=len) or sets[0]


def missing_permissions(exc: RequestFailed) -> list[Permission] | None:
    """What the installation lacks when GitHub refused `exc`'s request for a missing permission (403
    "Resource not accessible by integration"), from `x-accepted-github-permissions` compared with the
    permissions the request's token was issued with (`closest_missing`). None when the refusal was
    something else."""
    response = exc.response
    if response.status_code != 403:
        return None
    try:
        message = response.json().get("message", "")
    except ValueError:
        return None
    if message != NOT_ACCESSIBLE:
        return None
    return closest_missing(response.headers.get("x-accepted-github-permissions", ""), _granted_to(response.raw_request))


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
