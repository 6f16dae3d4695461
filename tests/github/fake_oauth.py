"""GitHub's user authorization for the fake GitHub: the OAuth web flow of a GitHub App, `/user`, and
which repositories a user token may read.

As GitHub does: `/login/oauth/authorize` (on the web host) sends the browser back to `redirect_uri`
with `code` and `state`; `POST /login/oauth/access_token` trades the code once, within its app, for an
expiring user token (answering errors with status 200 and an `error` field); with that token,
`GET /repos/{owner}/{repo}` answers 404 to a user who cannot read a private repository.
"""

from __future__ import annotations

import itertools
import secrets
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

    def user_of(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        return self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None

    def can_read(self, login: str, repository: str) -> bool:
        return repository not in self.private or login in self.readers.get(repository, set())

    def repository_as_user(self, login: str, repository: str) -> Response | None:
        """GitHub's answer to a user token for a repository it cannot read (None: it can)."""
        self.repo_checks.append((login, repository))
        return None if self.can_read(login, repository) else JSONResponse({"message": "Not Found"}, status_code=404)

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/login/oauth/authorize")
        async def authorize(client_id: str = "", redirect_uri: str = "", state: str = "") -> Response:
            if client_id != self.client_id:
                return HTMLResponse("<h1>404</h1>", status_code=404)
            if self.signing_in is None:
                return HTMLResponse("<h1>Sign in to GitHub</h1><p>to continue to evalbot</p>")
            code = secrets.token_hex(10)
            self._codes[code] = (self.signing_in, redirect_uri)
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
            login = self.user_of(request.headers.get("authorization", ""))
            if login is None:
                return JSONResponse({"message": "Requires authentication"}, status_code=401)
            return JSONResponse({"login": login, "id": next(self._user_ids), "type": "User"})

        return router

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
        token = "ghu_" + secrets.token_hex(18)
        self.tokens[token] = login
        return {
            "access_token": token,
            "expires_in": USER_TOKEN_EXPIRES_S,
            "refresh_token": "ghr_" + secrets.token_hex(30),
            "refresh_token_expires_in": REFRESH_TOKEN_EXPIRES_S,
            "scope": "",
            "token_type": "bearer",
        }
