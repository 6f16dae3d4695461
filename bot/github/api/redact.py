"""Redaction of everything posted to GitHub: the rules live in `bot.pipeline.redact`, below the store,
which applies the same rules before anything is written."""

from bot.pipeline.redact import MIN_SECRET_CHARS, REDACTED, SECRET_NAME, Redactor, secret_values

__all__ = ["MIN_SECRET_CHARS", "REDACTED", "SECRET_NAME", "Redactor", "secret_values"]
