"""Who may see a repository's pages: GitHub sign-in (the App's user authorization, with PKCE) and read
access, asked of GitHub by the repository's id.

Sessions live in the database (bot/store/sessions.py); the signed cookie carries only the session's
key and, during sign-in, the OAuth state and PKCE verifier. The user token is kept encrypted with
Fernet under a key derived from SESSION_SECRET.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.fernet import Fernet, InvalidToken
from githubkit import GitHub, TokenAuthStrategy
from githubkit.exception import RequestFailed

from bot.errors import ConfigError
from bot.github.api.client import installation_client
from bot.settings import Settings

# How long a repository's visibility and a user's read access are trusted before GitHub is asked again:
# access lost on GitHub is lost here within a minute.
ACCESS_TTL_S = 60
# SESSION_SECRET signs cookies and derives the token key: shorter is refused at start.
MIN_SESSION_SECRET_BYTES = 32
# Answers kept before the expired ones are dropped (a long-running web process meets many users).
MAX_KEPT = 10_000
# A sign-in lasts as long as GitHub's expiring user token does (eight hours).
SESSION_MAX_AGE_S = 8 * 3600


def session_secret(settings: Settings) -> str:
    """SESSION_SECRET, or one random per process when it is unset.

    Raises:
        ConfigError: SESSION_SECRET is shorter than MIN_SESSION_SECRET_BYTES.
    """
    if settings.SESSION_SECRET is None:
        return _PROCESS_SECRET
    if len(settings.SESSION_SECRET.encode()) < MIN_SESSION_SECRET_BYTES:
        raise ConfigError(
            f"SESSION_SECRET is {len(settings.SESSION_SECRET.encode())} bytes: use at least "
            f"{MIN_SESSION_SECRET_BYTES} random bytes, e.g. from `openssl rand -base64 48`"
        )
    return settings.SESSION_SECRET


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


def new_verifier() -> str:
    """A PKCE code verifier: 64 characters from RFC 7636's alphabet (43 to 128 allowed)."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a verifier (the only method GitHub accepts): base64url of its SHA-256, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def redirect_uri(settings: Settings) -> str | None:
    """Where GitHub sends the browser back: from PUBLIC_URL only. A URL built from the request would say
    `http://` behind a TLS proxy, and a forged Host header would choose it."""
    return f"{settings.PUBLIC_URL.rstrip('/')}/login/callback" if settings.PUBLIC_URL else None


def authorize_url(settings: Settings, redirect_to: str, state: str, verifier: str) -> str:
    query = urlencode(
        {
            "client_id": settings.GITHUB_CLIENT_ID,
            "redirect_uri": redirect_to,
            "state": state,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    return f"{settings.GITHUB_WEB_URL.rstrip('/')}/login/oauth/authorize?{query}"


class SignInError(Exception):
    """GitHub did not give a user token for the code (expired, reused, or the app's secret is wrong)."""


class GitHubUnavailable(Exception):
    """GitHub did not answer a sign-in's request as it should (down, 5xx): try again later."""


@dataclass(frozen=True)
class UserToken:
    token: str
    # Seconds until GitHub expires it; None for an app that opted out of expiring user tokens.
    expires_in_s: int | None


async def exchange_code(settings: Settings, code: str, redirect_to: str, verifier: str) -> UserToken:
    """The user access token for an authorization code, proving with the PKCE verifier that this
    server started the sign-in.

    httpx, not githubkit: the endpoint is on GitHub's web host, not the API, and answers errors with
    status 200 and an `error` field.

    Raises:
        SignInError: GitHub refused the code.
        GitHubUnavailable: GitHub did not answer.
    """
    url = f"{settings.GITHUB_WEB_URL.rstrip('/')}/login/oauth/access_token"
    data = {
        "client_id": settings.GITHUB_CLIENT_ID or "",
        "client_secret": settings.GITHUB_CLIENT_SECRET or "",
        "code": code,
        "redirect_uri": redirect_to,
        "code_verifier": verifier,
    }
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            response = await http.post(url, data=data, headers={"Accept": "application/json"})
        body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError) as exc:
        raise GitHubUnavailable(type(exc).__name__) from exc
    if response.status_code >= 500:
        raise GitHubUnavailable(f"HTTP {response.status_code}")
    token = body.get("access_token")
    if not token:
        raise SignInError(str(body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"))
    expires = body.get("expires_in")
    return UserToken(str(token), int(expires) if isinstance(expires, int | str) and str(expires).isdigit() else None)


def user_client(settings: Settings, token: str) -> GitHub[TokenAuthStrategy]:
    return GitHub(TokenAuthStrategy(token), base_url=settings.GITHUB_API_URL, timeout=30.0)


async def user_login(settings: Settings, token: str) -> str:
    """The signed-in user's login.

    Raises:
        GitHubUnavailable: `GET /user` failed (GitHub down, the token refused at once).
    """
    try:
        response = await user_client(settings, token).arequest("GET", "/user")
        return str(response.json()["login"])
    except (RequestFailed, httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
        raise GitHubUnavailable(type(exc).__name__) from exc


@dataclass(frozen=True)
class RepositoryInfo:
    private: bool
    default_branch: str
    html_url: str
    id: int
    full_name: str


class TokenRejected(Exception):
    """GitHub answered 401 to the user token: it expired or was revoked; sign in again."""


class Access:
    """Repository visibility (asked as the installation) and users' read access (asked with their own
    token), each kept ACCESS_TTL_S seconds.

    A dictionary with expiry times rather than a cache library: two small maps, one process.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        # The clock answers are kept by (tests move it; the event loop's own must not be).
        self.clock: Callable[[], float] = time.monotonic
        self._repos: dict[int, tuple[float, RepositoryInfo | None]] = {}
        self._readers: dict[tuple[str, int], tuple[float, bool]] = {}
        self._ids: dict[str, tuple[float, int | None]] = {}

    async def repository_id(self, full_name: str, installation_id: int) -> int | None:
        """GitHub's id of the repository called `full_name` now, as the installation sees it."""
        now = self.clock()
        kept = self._ids.get(full_name.casefold())
        if kept and kept[0] > now:
            return kept[1]
        gh = installation_client(self.settings, installation_id)
        found: int | None
        try:
            found = int((await gh.arequest("GET", f"/repos/{full_name}")).json()["id"])
        except RequestFailed as exc:
            if exc.response.status_code not in (403, 404):
                raise
            found = None
        if len(self._ids) >= MAX_KEPT:
            self._ids = {k: v for k, v in self._ids.items() if v[0] > now}
        self._ids[full_name.casefold()] = (now + ACCESS_TTL_S, found)
        return found

    async def repository(self, repository_id: int, installation_id: int) -> RepositoryInfo | None:
        """The repository with GitHub id `repository_id` as the app's installation sees it, whatever it
        is called now; None when GitHub does not show it."""
        now = self.clock()
        kept = self._repos.get(repository_id)
        if kept and kept[0] > now:
            return kept[1]
        gh = installation_client(self.settings, installation_id)
        info: RepositoryInfo | None
        try:
            data = (await gh.arequest("GET", f"/repositories/{repository_id}")).json()
            info = RepositoryInfo(
                bool(data.get("private", True)),
                str(data["default_branch"]),
                str(data["html_url"]),
                int(data["id"]),
                str(data["full_name"]),
            )
        except RequestFailed as exc:
            if exc.response.status_code not in (403, 404):
                raise
            info = None
        if len(self._repos) >= MAX_KEPT:
            self._repos = {k: v for k, v in self._repos.items() if v[0] > now}
        self._repos[repository_id] = (now + ACCESS_TTL_S, info)
        return info

    async def can_read(self, login: str, token: str, repository_id: int) -> bool:
        """Whether the signed-in user may read the repository: GitHub answers 404 (or 403) to a user
        token that cannot.

        Raises:
            TokenRejected: the token no longer works.
        """
        now = self.clock()
        key = (login.casefold(), repository_id)
        kept = self._readers.get(key)
        if kept and kept[0] > now:
            return kept[1]
        try:
            await user_client(self.settings, token).arequest("GET", f"/repositories/{repository_id}")
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
