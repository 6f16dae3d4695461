"""Signed-in browsers, kept in the database: a cookie is only a key to a row, and deleting the row (sign
out, expiry) ends the session for every copy of the cookie."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from bot.store.store import Store, _utc
from bot.store.tables import WebSession

# Random bytes of a session key (the cookie's value): 256 bits.
SESSION_KEY_BYTES = 32


@dataclass(frozen=True)
class SignedIn:
    login: str
    sealed_token: str
    csrf: str
    expires_at: datetime


def _row_id(key: str) -> str:
    # The table keeps a hash: a copy of it opens no session.
    return hashlib.sha256(key.encode()).hexdigest()


def create_session(store: Store, login: str, sealed_token: str, csrf: str, lifetime_s: float) -> str:
    """A new session for `login`, valid `lifetime_s` seconds; its key, for the cookie. Expired rows of
    any user are dropped on the way (sign-ins are rare enough to carry that work)."""
    key = secrets.token_urlsafe(SESSION_KEY_BYTES)
    now = datetime.now(UTC)
    with store._session() as session:
        session.execute(delete(WebSession).where(WebSession.expires_at < now))
        session.add(
            WebSession(
                id=_row_id(key),
                login=login,
                sealed_token=sealed_token,
                csrf=csrf,
                created_at=now,
                expires_at=now + timedelta(seconds=lifetime_s),
            )
        )
    return key


def signed_in(store: Store, key: str | None) -> SignedIn | None:
    """The live session of a cookie's key; None when there is none, it ended or it expired."""
    if not key:
        return None
    with store._session() as session:
        row = session.get(WebSession, _row_id(key))
        if row is None:
            return None
        expires_at = _utc(row.expires_at)
        if expires_at <= datetime.now(UTC):
            session.delete(row)
            return None
        return SignedIn(row.login, row.sealed_token, row.csrf, expires_at)


def end_session(store: Store, key: str | None) -> None:
    """Sign out: the row goes, so the cookie (and every copy of it) opens nothing."""
    if key:
        with store._session() as session:
            session.execute(delete(WebSession).where(WebSession.id == _row_id(key)))
