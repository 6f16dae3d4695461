"""Production feedback: the per-repository tokens that post it (kept hashed), the records, and which
of them the app's pull requests proposed to the suites' datasets."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from bot.store.store import Store, _at, _utc
from bot.store.tables import FeedbackRecord, FeedbackToken

# Random bytes of a feedback token: 256 bits, after a prefix that secret scanners and people can spot.
TOKEN_BYTES = 32
TOKEN_PREFIX = "evfb_"
# Each merged row's case id, and the value of its source field (`lineage.source_field`).
CASE_ID_PREFIX = "feedback-"
SOURCE_PREFIX = "feedback:"


def token_hash(token: str) -> str:
    # The token is 256 random bits: a plain sha256 is as good as a slow hash, and a lookup by it is exact.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Feedback:
    id: int
    suite: str
    inputs: dict[str, Any]
    output: str
    correct: bool
    corrected: str | None
    created_at: datetime | None = None  # None before it is stored

    @property
    def answer(self) -> str | None:
        """The reference answer the feedback confirms: the correction, else the output when it was right;
        None for an answer marked wrong with no correction (nothing to grade against)."""
        if self.corrected is not None:
            return self.corrected
        return self.output if self.correct else None

    @property
    def case_id(self) -> str:
        return f"{CASE_ID_PREFIX}{self.id}"

    def row(self, id_field: str, expected_field: str, source_field: str) -> dict[str, Any]:
        """The dataset row: its input fields, the reference answer, and its lineage (the feedback's id
        in the source field and in `feedback_id`)."""
        return {
            id_field: self.case_id,
            **self.inputs,
            expected_field: self.answer,
            source_field: f"{SOURCE_PREFIX}{self.id}",
            "feedback_id": self.id,
        }


@dataclass(frozen=True)
class FeedbackRepository:
    repository: str
    created_at: datetime
    last_merge_fire_at: datetime | None


def mint_token(store: Store, repository: str, at: float | None = None) -> str:
    """A new token for `repository`'s feedback, replacing any earlier one (which stops working now).
    Returned once: only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    with store._session() as session:
        row = session.get(FeedbackToken, repository, with_for_update=True)
        if row is None:
            session.add(FeedbackToken(repository=repository, token_hash=token_hash(token), created_at=_at(at)))
        else:
            row.token_hash, row.created_at = token_hash(token), _at(at)
    return token


def repository_of_token(store: Store, token: str) -> str | None:
    """The repository a feedback token was minted for; None for any other string."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with store._session() as session:
        return session.scalars(
            select(FeedbackToken.repository).where(FeedbackToken.token_hash == token_hash(token))
        ).first()


def add_feedback(
    store: Store,
    repository: str,
    suite: str,
    inputs: dict[str, Any],
    output: str,
    correct: bool,
    corrected: str | None,
    at: float | None = None,
) -> int:
    """Record one piece of feedback; its id. Its texts pass the store's redaction (no secret a production
    answer carried is kept, nor later written into a dataset)."""
    row = FeedbackRecord(
        repository=repository,
        suite=suite,
        inputs=_redacted(inputs, store),
        output=store.redact(output),
        correct=correct,
        corrected=None if corrected is None else store.redact(corrected),
        created_at=_at(at),
    )
    with store._session() as session:
        session.add(row)
        session.flush()
        return row.id


def pending_feedback(store: Store, repository: str, confirmed_only: bool = True) -> list[Feedback]:
    """The repository's feedback no pull request has proposed yet, oldest first; only those with a
    reference answer when `confirmed_only`."""
    query = (
        select(FeedbackRecord)
        .where(FeedbackRecord.repository == repository, FeedbackRecord.pull_request.is_(None))
        .order_by(FeedbackRecord.id)
    )
    with store._session() as session:
        found = [_feedback(row) for row in session.scalars(query).all()]
    return [f for f in found if f.answer is not None or not confirmed_only]


def mark_proposed(store: Store, ids: list[int], pull_request: int, sha: str, at: float | None = None) -> None:
    """The feedback `ids` is in the app's pull request `pull_request` (head `sha`): never proposed again."""
    with store._session() as session:
        session.execute(
            update(FeedbackRecord)
            .where(FeedbackRecord.id.in_(ids), FeedbackRecord.pull_request.is_(None))
            .values(pull_request=pull_request, merge_sha=sha, merged_at=_at(at))
        )


def is_feedback_pull(store: Store, repository: str, pull_request: int, head_sha: str) -> bool:
    """Whether the app opened `pull_request` with feedback and its head is still the app's commit."""
    query = select(FeedbackRecord.id).where(
        FeedbackRecord.repository == repository,
        FeedbackRecord.pull_request == pull_request,
        FeedbackRecord.merge_sha == head_sha,
    )
    with store._session() as session:
        return session.scalars(query.limit(1)).first() is not None


def proposed_case_ids(store: Store, repository: str, suite: str) -> set[str]:
    """The case ids of `suite`'s rows that came from feedback through the app's pull requests."""
    query = select(FeedbackRecord.id).where(
        FeedbackRecord.repository == repository,
        FeedbackRecord.suite == suite,
        FeedbackRecord.pull_request.is_not(None),
    )
    with store._session() as session:
        return {f"{CASE_ID_PREFIX}{i}" for i in session.scalars(query).all()}


def feedback_repositories(store: Store) -> list[FeedbackRepository]:
    """Repositories with a feedback token: where `feedback.merge` schedules are looked for."""
    with store._session() as session:
        rows = session.scalars(select(FeedbackToken).order_by(FeedbackToken.repository)).all()
        return [
            FeedbackRepository(
                r.repository, _utc(r.created_at), _utc(r.last_merge_fire_at) if r.last_merge_fire_at else None
            )
            for r in rows
        ]


def claim_merge_firing(store: Store, repository: str, fire_at: float) -> bool:
    """Mark a `feedback.merge` firing as taken; False when it (or a later one) already was."""
    when = _at(fire_at)
    with store._session() as session:
        row = session.get(FeedbackToken, repository, with_for_update=True)
        if row is None or (row.last_merge_fire_at is not None and _utc(row.last_merge_fire_at) >= when):
            return False
        row.last_merge_fire_at = when
        return True


def _redacted(value: Any, store: Store) -> Any:
    if isinstance(value, str):
        return store.redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v, store) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, store) for v in value]
    return value


def _feedback(row: FeedbackRecord) -> Feedback:
    return Feedback(row.id, row.suite, dict(row.inputs), row.output, row.correct, row.corrected, _utc(row.created_at))
