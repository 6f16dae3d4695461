"""Who may see a repository's pages: GitHub sign-in (the App's user authorization) and read access.

The session cookie is signed by Starlette's SessionMiddleware, which does not hide its payload: the
user token in it is encrypted with Fernet under a key derived from SESSION_SECRET.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.fernet import Fernet, InvalidToken
from githubkit import GitHub, TokenAuthStrategy
from githubkit.exception import RequestFailed

from bot.github.client import installation_client
from bot.settings import Settings

# How long a repository's visibility and a user's read access are trusted before GitHub is asked again.
ACCESS_TTL_S = 300
# Answers kept before the expired ones are dropped (a long-running web process meets many users).
MAX_KEPT = 10_000
# A sign-in lasts as long as GitHub's expiring user token does (eight hours).
SESSION_MAX_AGE_S = 8 * 3600


def session_secret(settings: Settings) -> str:
    """SESSION_SECRET, or one random per process when it is unset."""
    return settings.SESSION_SECRET or _PROCESS_SECRET


_PROCESS_SECRET = secrets.token_urlsafe(32)


class TokenBox:
    """Encrypts the user token kept in the (readable) session cookie."""

    def __init__(self, secret: str):
        key = hashlib.sha256(b"evalbot user token\0" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def open(self, sealed: str | None) -> str | None:
        """The token, or None when there is none or it was not sealed with this secret."""
        if not sealed:
            return None
        try:
            return self._fernet.decrypt(sealed.encode(), ttl=SESSION_MAX_AGE_S).decode()
        except InvalidToken:
            return None


def new_state() -> str:
    return secrets.token_urlsafe(32)


def same(expected: str | None, given: str | None) -> bool:
    """Two secrets compared in constant time; a missing one never matches."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def safe_next(target: str | None) -> str:
    """A path on this site to return to after sign-in; anything else (another host) goes home."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def authorize_url(settings: Settings, redirect_uri: str, state: str) -> str:
    query = urlencode({"client_id": settings.GITHUB_CLIENT_ID, "redirect_uri": redirect_uri, "state": state})
    return f"{settings.GITHUB_WEB_URL.rstrip('/')}/login/oauth/authorize?{query}"


class SignInError(Exception):
    """GitHub did not give a user token for the code (expired, reused, or the app's secret is wrong)."""


async def exchange_code(settings: Settings, code: str, redirect_uri: str) -> str:
    """The user access token for an authorization code.

    httpx, not githubkit: the endpoint is on GitHub's web host, not the API, and answers errors with
    status 200 and an `error` field.

    Raises:
        SignInError: GitHub refused the code.
    """
    url = f"{settings.GITHUB_WEB_URL.rstrip('/')}/login/oauth/access_token"
    data = {
        "client_id": settings.GITHUB_CLIENT_ID or "",
        "client_secret": settings.GITHUB_CLIENT_SECRET or "",
        "code": code,
        "redirect_uri": redirect_uri,
    }
    async with httpx.AsyncClient(timeout=30.0) as http:
        response = await http.post(url, data=data, headers={"Accept": "application/json"})
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    token = body.get("access_token")
    if not token:
        raise SignInError(str(body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"))
    return str(token)


def user_client(settings: Settings, token: str) -> GitHub[TokenAuthStrategy]:
    return GitHub(TokenAuthStrategy(token), base_url=settings.GITHUB_API_URL, timeout=30.0)


async def user_login(settings: Settings, token: str) -> str:
    response = await user_client(settings, token).arequest("GET", "/user")
    return str(response.json()["login"])


@dataclass(frozen=True)
class RepositoryInfo:
    private: bool
    default_branch: str
    html_url: str


class TokenRejected(Exception):
    """GitHub answered 401 to the user token: it expired or was revoked; sign in again."""


class Access:
    """Repository visibility (asked as the installation) and users' read access (asked with their own
    token), each kept ACCESS_TTL_S seconds.

    A dictionary with expiry times rather than a cache library: two small maps, one process.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._repos: dict[str, tuple[float, RepositoryInfo | None]] = {}
        self._readers: dict[tuple[str, str], tuple[float, bool]] = {}

    async def repository(self, full_name: str, installation_id: int) -> RepositoryInfo | None:
        """The repository as the app's installation sees it; None when GitHub does not show it."""
        now = time.monotonic()
        kept = self._repos.get(full_name)
        if kept and kept[0] > now:
            return kept[1]
        gh = installation_client(self.settings, installation_id)
        info: RepositoryInfo | None
        try:
            data = (await gh.arequest("GET", f"/repos/{full_name}")).json()
            info = RepositoryInfo(bool(data.get("private", True)), str(data["default_branch"]), str(data["html_url"]))
        except RequestFailed as exc:
            if exc.response.status_code not in (403, 404):
                raise
            info = None
        if len(self._repos) >= MAX_KEPT:
            self._repos = {k: v for k, v in self._repos.items() if v[0] > now}
        self._repos[full_name] = (now + ACCESS_TTL_S, info)
        return info

    async def can_read(self, login: str, token: str, full_name: str) -> bool:
        """Whether the signed-in user may read the repository: GitHub answers 404 (or 403) to a user
        token that cannot.

        Raises:
            TokenRejected: the token no longer works.
        """
        now = time.monotonic()
        key = (login.casefold(), full_name.casefold())
        kept = self._readers.get(key)
        if kept and kept[0] > now:
            return kept[1]
        try:
            await user_client(self.settings, token).arequest("GET", f"/repos/{full_name}")
            allowed = True
        except RequestFailed as exc:
            if exc.response.status_code == 401:
                raise TokenRejected from exc
            if exc.response.status_code not in (403, 404):
                raise
            allowed = False
        if len(self._readers) >= MAX_KEPT:
            self._readers = {k: v for k, v in self._readers.items() if v[0] > now}
        self._readers[key] = (now + ACCESS_TTL_S, allowed)
        return allowed
