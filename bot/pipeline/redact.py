"""The one redaction step before anything leaves the worker or is stored: secrets and URL credentials out."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from bot.pipeline.render import md_cell, md_code, md_text
from bot.settings import Settings

REDACTED = "[redacted]"
# Names of variables that hold a secret: the settings' own (`PRIVATE_KEY`, `WEBHOOK_SECRET`,
# `METRICS_TOKEN`, `GITHUB_CLIENT_SECRET`) and litellm's credentials (`OPENAI_API_KEY`, `HF_TOKEN`,
# `AWS_SECRET_ACCESS_KEY`, `AWS_ACCESS_KEY_ID`, `WATSONX_APIKEY`, `VERTEXAI_CREDENTIALS`, ...).
SECRET_NAME = re.compile(r"(KEY|KEY_ID|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
# Shorter values are not redacted: a secret of a few characters is no secret, and replacing every
# "true" or "1" in a report would garble it.
MIN_SECRET_CHARS = 6
# Credentials by their shape, whatever variable (or none) held them: GitHub tokens (`ghs_` installation
# tokens included), provider keys (`sk-`, `sk-ant-`), JWTs, AWS access key ids.
_TOKEN_SHAPES = re.compile(
    r"\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_\w{20,}|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+|\bAKIA[0-9A-Z]{16}\b"
)
# A URL's user:password@ and its query string (signed URLs carry their signature there); the report
# filters put a zero-width space after the scheme's ":" so that GitHub does not make it a link.
_URL = re.compile(
    r"\b([a-zA-Z][a-zA-Z0-9+.-]*:\u200b?//)([^\s/@<>()\[\]`|]*@)?([^\s?#<>()\[\]`|]*)(\?[^\s#<>()\[\]`|]*)?"
)


def _url_parts(match: re.Match[str]) -> str:
    scheme, _credentials, rest, query = match.groups()
    return scheme + rest + ("?" + REDACTED if query and len(query) > 1 else "")


def secret_values(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the process holds: secret-named settings and environment variables, the private
    key file's text, and passwords inside URL-valued variables (`DATABASE_URL`, `REDIS_URL`)."""
    # The environment and the settings both count: a setting given in code (another DATABASE_URL, say)
    # does not make the environment's value any less secret.
    sources: list[dict[str, str]] = [dict(os.environ if environ is None else environ)]
    held: list[str] = []
    if settings is not None:
        sources.append({k: v for k, v in settings.model_dump().items() if isinstance(v, str)})
        if settings.PRIVATE_KEY_PATH is not None and settings.PRIVATE_KEY_PATH.is_file():
            held.append(settings.PRIVATE_KEY_PATH.read_text())
    for name, value in (item for named in sources for item in named.items()):
        if SECRET_NAME.search(name):
            held.append(value)
        elif "://" in value:
            with contextlib.suppress(ValueError):  # not a URL after all (a bad port)
                held.append(urlsplit(value.strip()).password or "")
    values: set[str] = set()
    for value in held:
        # A PEM key may be posted a line at a time: each line counts too.
        values.update([value.strip(), *(line.strip() for line in value.splitlines())])
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


class Redactor:
    """Replaces secret values, credential-shaped tokens and URL credentials/query strings in text."""

    def __init__(self, secrets: Iterable[str]):
        forms: set[str] = set()
        for secret in secrets:
            # The value as the report filters escape it, so escaped text does not slip through.
            forms.update({secret, md_cell(secret, len(secret) * 8), md_text(secret, len(secret) * 8)})
            forms.add(md_code(secret, len(secret) * 8).strip("`"))
        ordered = sorted((f for f in forms if len(f) >= MIN_SECRET_CHARS), key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def for_settings(cls, settings: Settings | None = None) -> Redactor:
        return cls(secret_values(settings))

    def __call__(self, text: str) -> str:
        # URLs first: a redacted password inside one would hide its credentials from the pattern.
        text = _URL.sub(_url_parts, text)
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        return _TOKEN_SHAPES.sub(REDACTED, text)
