"""GitHub's user authorization for the fake GitHub: the OAuth web flow of a GitHub App, `/user`, and
which repositories a user token may read.

As GitHub does: `/login/oauth/authorize` (on the web host) sends the browser back to `redirect_uri`
with `code` and `state`; `POST /login/oauth/access_token` trades the code once, within its app, for an
expiring user token (answering errors with status 200 and an `error` field); with that token,
`GET /repos/{owner}/{repo}` answers 404 to a user who cannot read a private repository.

Stricter, as GitHub is: the `redirect_uri` must be under a registered callback URL; a PKCE challenge
(S256 only) must be answered with its verifier; user tokens expire (`advance` moves the fake's clock).
And the manifest flow that creates an app: the form post to `/settings/apps/new` (or an organisation's)
and `POST /app-manifests/{code}/conversions`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import time
import zlib
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

CLIENT_ID = "Iv1.fakeclient"
CLIENT_SECRET = "fake-client-secret"
# GitHub's expiring user tokens: eight hours; refresh tokens six months.
USER_TOKEN_EXPIRES_S = 28_800
REFRESH_TOKEN_EXPIRES_S = 15_897_600


class FakeOAuth:
    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET):
        self.client_id, self.client_secret = client_id, client_secret
        # Who is signed in to GitHub in the browser and approves the app; None: GitHub shows its sign-in form.
        self.signing_in: str | None = None
        self.private: set[str] = set()  # private repositories ("owner/name"); others are public
        self.readers: dict[str, set[str]] = {}  # repository -> logins who can read it
        self.tokens: dict[str, str] = {}  # user token -> login
        self.repo_checks: list[tuple[str, str]] = []  # (login, repository) asked with a user token
        self._codes: dict[str, tuple[str, str]] = {}  # code -> (login, redirect_uri); used once
        self._user_ids = itertools.count(5000)
        # --- Strictness and the manifest flow (sign-in, run pages, `evalbot setup`) ---
        # The app's registered callback URLs: a redirect_uri elsewhere is refused, as GitHub does.
        self.callback_urls: list[str] = []
        self.expires_at: dict[str, float] = {}  # user token -> when it expires, on the fake's clock
        self.clock_offset_s = 0.0
        self._challenges: dict[str, str] = {}  # code -> PKCE code_challenge (S256)
        # GitHub's repository ids: a rename keeps the id, a new repository under an old name gets another.
        self.repo_ids: dict[str, int] = {}
        self.user_errors: list[int] = []  # statuses `GET /user` answers next (one each)
        # Apps created through the manifest flow: the conversion answers with the fake's own app (so the
        # written settings work against it) under these credentials.
        self.manifests: dict[str, tuple[dict[str, Any], str | None]] = {}  # code -> (manifest, organization)
        self.created: list[dict[str, Any]] = []
        self.app_id = ""
        self.app_pem = ""
        self.webhook_secret = "fake-webhook-secret-" + secrets.token_hex(8)

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def advance(self, seconds: float) -> None:
        """Move the fake's clock on (user tokens expire by it)."""
        self.clock_offset_s += seconds

    def user_of(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "token") or token not in self.tokens:
            return None
        if self.expires_at.get(token, float("inf")) <= self.now():
            return None
        return self.tokens[token]

    def repository_id(self, full_name: str) -> int:
        """The repository's id: as registered, else a stable one from its name (registered from then on)."""
        return self.repo_ids.setdefault(full_name, 1_000_000 + zlib.crc32(full_name.casefold().encode()) % 1_000_000)

    def name_of(self, repository_id: int) -> str | None:
        named = {v: k for k, v in self.repo_ids.items()}
        return named.get(repository_id)

    def _callback_ok(self, redirect_uri: str) -> bool:
        # GitHub accepts the callback URL itself or a path below it, on the same host and port.
        return any(redirect_uri == url or redirect_uri.startswith(url.rstrip("/") + "/") for url in self.callback_urls)

    def can_read(self, login: str, repository: str) -> bool:
        return repository not in self.private or login in self.readers.get(repository, set())

    def repository_as_user(self, login: str, repository: str) -> Response | None:
        """GitHub's answer to a user token for a repository it cannot read (None: it can)."""
        self.repo_checks.append((login, repository))
        return None if self.can_read(login, repository) else JSONResponse({"message": "Not Found"}, status_code=404)

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/login/oauth/authorize")
        async def authorize(
            client_id: str = "",
            redirect_uri: str = "",
            state: str = "",
            code_challenge: str = "",
            code_challenge_method: str = "",
        ) -> Response:
            if client_id != self.client_id:
                return HTMLResponse("<h1>404</h1>", status_code=404)
            if not self._callback_ok(redirect_uri):
                return HTMLResponse("<h1>The redirect_uri is not associated with this application.</h1>", 400)
            if code_challenge and code_challenge_method != "S256":
                return HTMLResponse("<h1>Only the S256 code challenge method is supported.</h1>", 400)
            if self.signing_in is None:
                return HTMLResponse("<h1>Sign in to GitHub</h1><p>to continue to evalbot</p>")
            code = secrets.token_hex(10)
            self._codes[code] = (self.signing_in, redirect_uri)
            if code_challenge:
                self._challenges[code] = code_challenge
            return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=302)

        @router.post("/login/oauth/access_token")
        async def access_token(request: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            answer = self._exchange(form)
            if "application/json" in request.headers.get("accept", ""):
                return JSONResponse(answer)
            return Response(urlencode(answer), media_type="application/x-www-form-urlencoded")

        @router.get("/user")
        async def user(request: Request) -> JSONResponse:
            if self.user_errors:
                return JSONResponse({"message": "Server Error"}, status_code=self.user_errors.pop(0))
            login = self.user_of(request.headers.get("authorization", ""))
            if login is None:
                return JSONResponse({"message": "Requires authentication"}, status_code=401)
            return JSONResponse({"login": login, "id": next(self._user_ids), "type": "User"})

        @router.post("/settings/apps/new")
        async def new_app(request: Request, state: str = "") -> Response:
            return await self._manifest_posted(request, state, None)

        @router.post("/organizations/{org}/settings/apps/new")
        async def new_org_app(org: str, request: Request, state: str = "") -> Response:
            return await self._manifest_posted(request, state, org)

        @router.post("/app-manifests/{code}/conversions")
        async def conversion(code: str) -> JSONResponse:
            posted = self.manifests.pop(code, None)
            if posted is None:
                return JSONResponse({"message": "Not Found"}, status_code=404)
            manifest, org = posted
            # The new app's own OAuth credentials: sign-in works with them from now on.
            self.client_id = "Iv23." + secrets.token_hex(8)
            self.client_secret = secrets.token_hex(20)
            self.callback_urls = list(manifest.get("callback_urls") or [])
            slug = str(manifest.get("name") or "evalbot").lower().replace(" ", "-")
            app = {
                "id": int(self.app_id),
                "slug": slug,
                "name": manifest.get("name"),
                "owner": {"login": org or self.signing_in, "type": "Organization" if org else "User"},
                "html_url": f"https://github.com/apps/{slug}",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "webhook_secret": self.webhook_secret,
                "pem": self.app_pem,
                "permissions": manifest.get("default_permissions", {}),
                "events": manifest.get("default_events", []),
            }
            self.created.append({"manifest": manifest, "organization": org, "app": app})
            return JSONResponse(app, status_code=201)

        return router

    async def _manifest_posted(self, request: Request, state: str, org: str | None) -> Response:
        """GitHub's "Create GitHub App" page, approved at once: back to the manifest's redirect_url with a
        code valid for one conversion."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        try:
            manifest = json.loads(form.get("manifest", ""))
        except ValueError:
            return HTMLResponse("<h1>Invalid GitHub App configuration</h1>", status_code=422)
        if not isinstance(manifest, dict) or not (manifest.get("hook_attributes") or {}).get("url"):
            return HTMLResponse("<h1>Invalid GitHub App configuration: hook_attributes.url</h1>", status_code=422)
        code = secrets.token_hex(10)
        self.manifests[code] = (manifest, org)
        query = urlencode({"code": code, "state": state})
        return RedirectResponse(f"{manifest['redirect_url']}?{query}", status_code=302)

    def _exchange(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return {
                "error": "incorrect_client_credentials",
                "error_description": "The client_id and/or client_secret passed are incorrect.",
            }
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None:
            return {"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}
        login, redirect_uri = grant
        if form.get("redirect_uri") and form["redirect_uri"] != redirect_uri:
            return {
                "error": "redirect_uri_mismatch",
                "error_description": "The redirect_uri MUST match the registered callback URL for this application.",
            }
        challenge = self._challenges.pop(form.get("code", ""), None)
        if challenge is not None:
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
                return {"error": "invalid_grant", "error_description": "The code_verifier does not match."}
        token = "ghu_" + secrets.token_hex(18)
        self.tokens[token] = login
        self.expires_at[token] = self.now() + USER_TOKEN_EXPIRES_S
        return {
            "access_token": token,
            "expires_in": USER_TOKEN_EXPIRES_S,
            "refresh_token": "ghr_" + secrets.token_hex(30),
            "refresh_token_expires_in": REFRESH_TOKEN_EXPIRES_S,
            "scope": "",
            "token_type": "bearer",
        }
