"""`evalbot setup`: create the GitHub App from `app.yml` through GitHub's manifest flow, and write its
settings to an env file.

The flow (GitHub's "Registering a GitHub App from a manifest"): a page on this machine posts the
manifest to `https://github.com/settings/apps/new?state=…` (or an organisation's
`/organizations/<org>/settings/apps/new`); GitHub shows it, the user names the app and creates it;
GitHub sends the browser back to the manifest's `redirect_url` with a one-time `code` (valid for an
hour) and the `state`; `POST /app-manifests/{code}/conversions` answers with the app's `id`, `pem`,
`webhook_secret`, `client_id` and `client_secret`.
"""

from __future__ import annotations

import html
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from bot.errors import ConfigError, EvalbotError

# What the env file gets from the conversion's answer, by setting name.
CONVERTED = {
    "APP_ID": "id",
    "PRIVATE_KEY": "pem",
    "WEBHOOK_SECRET": "webhook_secret",
    "GITHUB_CLIENT_ID": "client_id",
    "GITHUB_CLIENT_SECRET": "client_secret",
}
# Random bytes of the SESSION_SECRET written beside them (the web process refuses fewer than 32).
SESSION_SECRET_BYTES = 48


class SetupError(EvalbotError):
    """GitHub refused the conversion, or the env file cannot be written."""


@dataclass(frozen=True)
class SetupPlan:
    """What `evalbot setup` creates: the manifest, where it is posted, and where the result goes.

    Args:
        manifest: the manifest as posted (app.yml with this deployment's URLs).
        post_url: GitHub's "new app" page for the account or organisation, with the state.
        state: the random value GitHub returns with the code (a callback without it is refused).
        env_file: where the settings are written (mode 0600).
        api_url: GitHub's API (the conversion endpoint).
        public_url: where `evalbot serve` will be reached.
    """

    manifest: dict[str, Any]
    post_url: str
    state: str
    env_file: Path
    api_url: str
    public_url: str


def build_manifest(
    template: dict[str, Any], public_url: str, redirect_url: str, name: str | None = None
) -> dict[str, Any]:
    """`template` (app.yml) with this deployment's webhook URL, sign-in callback URL and home page, and
    `redirect_url` (where GitHub returns the code: the local setup page)."""
    base = public_url.rstrip("/")
    manifest = {key: value for key, value in template.items() if key != "redirect_url"}
    manifest["url"] = base
    manifest["hook_attributes"] = {**(template.get("hook_attributes") or {}), "url": f"{base}/api/github/webhooks"}
    manifest["callback_urls"] = [f"{base}/login/callback"]
    manifest["redirect_url"] = redirect_url
    if name:
        manifest["name"] = name
    return manifest


def plan(
    template_path: Path,
    public_url: str,
    redirect_url: str,
    env_file: Path,
    *,
    org: str | None = None,
    name: str | None = None,
    web_url: str = "https://github.com",
    api_url: str = "https://api.github.com",
) -> SetupPlan:
    """Check the inputs and build the manifest.

    Raises:
        ConfigError: the public URL is not an http(s) URL, the template cannot be read, or the env file exists.
    """
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"--public-url must be an https:// address without query, not {public_url!r}")
    if env_file.exists():
        raise ConfigError(f"{env_file} exists: it may hold another app's secrets; remove it or pass another --env-file")
    try:
        template = yaml.safe_load(template_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the manifest template {template_path}: {exc}") from exc
    if not isinstance(template, dict):
        raise ConfigError(f"{template_path} is not a GitHub App manifest (a mapping)")
    state = secrets.token_urlsafe(32)
    owner = f"/organizations/{quote(org, safe='')}" if org else ""
    post_url = f"{web_url.rstrip('/')}{owner}/settings/apps/new?{urlencode({'state': state})}"
    manifest = build_manifest(template, public_url, redirect_url, name)
    return SetupPlan(manifest, post_url, state, env_file, api_url, public_url.rstrip("/"))


async def convert(api_url: str, code: str) -> dict[str, Any]:
    """The created app's credentials for the manifest flow's code (one use, within an hour).

    Raises:
        SetupError: GitHub refused the code or did not answer.
    """
    url = f"{api_url.rstrip('/')}/app-manifests/{quote(code, safe='')}/conversions"
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            response = await http.post(url, headers={"Accept": "application/vnd.github+json"})
    except httpx.HTTPError as exc:
        raise SetupError(f"GitHub did not answer the conversion ({type(exc).__name__})") from exc
    if response.status_code != 201:
        raise SetupError(f"GitHub refused the conversion: HTTP {response.status_code} {response.text[:200]}")
    app: dict[str, Any] = response.json()
    missing = [field for field in CONVERTED.values() if not app.get(field)]
    if missing:
        raise SetupError(f"GitHub's conversion lacks {', '.join(missing)}")
    return app


def env_values(app: dict[str, Any], public_url: str) -> dict[str, str]:
    """The settings `evalbot serve` and `evalbot worker` need, from the conversion's answer."""
    values = {setting: str(app[field]) for setting, field in CONVERTED.items()}
    # One line per setting: the PEM's newlines as `\n`, which Settings turns back (as PaaS secret stores need).
    values["PRIVATE_KEY"] = values["PRIVATE_KEY"].strip().replace("\n", "\\n")
    values["PUBLIC_URL"] = public_url
    values["SESSION_SECRET"] = secrets.token_urlsafe(SESSION_SECRET_BYTES)
    return values


def write_env(path: Path, values: dict[str, str]) -> None:
    """`KEY=value` lines in a new file readable by its owner only (0600 from its creation, never wider).

    Raises:
        SetupError: the file exists (it is not overwritten) or cannot be created.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SetupError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(descriptor, "w") as handle:
        handle.write("".join(f"{key}={value}\n" for key, value in values.items()))


def read_env(path: Path) -> dict[str, str]:
    """An env file as `write_env` writes it."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _form_page(setup: SetupPlan) -> str:
    manifest = html.escape(json.dumps(setup.manifest), quote=True)
    action = html.escape(setup.post_url, quote=True)
    return (
        "<!doctype html><meta charset=utf-8><title>evalbot setup</title>"
        "<h1>Create the evalbot GitHub App</h1>"
        f"<p>GitHub will show the app (webhook <code>{html.escape(setup.manifest['hook_attributes']['url'])}</code>) "
        "and ask you to name and create it; then it sends you back here.</p>"
        f'<form method="post" action="{action}">'
        f'<input type="hidden" name="manifest" value="{manifest}">'
        '<button type="submit" id="create">Create the app on GitHub</button></form>'
    )


def setup_app(setup: SetupPlan, done: list[dict[str, Any]]) -> Starlette:
    """The local pages: `/` posts the manifest to GitHub, `/callback` converts the code and writes the
    env file, appending the app to `done` (the command stops once it has one)."""

    async def start(request: Request) -> Response:
        return HTMLResponse(_form_page(setup))

    async def callback(request: Request) -> Response:
        code, state = request.query_params.get("code", ""), request.query_params.get("state", "")
        if done:
            return HTMLResponse("<p>The app is already created; this page can be closed.</p>", status_code=409)
        if not code or not secrets.compare_digest(state.encode(), setup.state.encode()):
            return HTMLResponse(
                "<p>This link is not from this setup (state mismatch): start again.</p>", status_code=400
            )
        try:
            app = await convert(setup.api_url, code)
            write_env(setup.env_file, env_values(app, setup.public_url))
        except SetupError as exc:
            return HTMLResponse(f"<p>Setup failed: {html.escape(str(exc))}</p>", status_code=502)
        done.append(app)
        install = html.escape(f"{app.get('html_url', '')}/installations/new", quote=True)
        return HTMLResponse(
            f"<h1>Created {html.escape(str(app.get('name') or app.get('slug')))}</h1>"
            f"<p>Its settings are in <code>{html.escape(str(setup.env_file))}</code>. "
            f'Next: <a href="{install}">install it on your repositories</a>.</p>'
        )

    return Starlette(routes=[Route("/", start), Route("/callback", callback)])
