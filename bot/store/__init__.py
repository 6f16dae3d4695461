"""Durable records: runs, suite results, per-case outcomes and the append-only audit trail.

The CLI and the worker use it; the pipeline and the engine never import it.
"""

from bot.store.migrate import head_revision, migrate, revision
from bot.store.store import (
    AUDIT_READ_LAST,
    Approval,
    AuditEntry,
    HistoryPoint,
    KnownRepository,
    Store,
    StoredRun,
    database_url,
    open_store,
)

__all__ = [
    "AUDIT_READ_LAST",
    "Approval",
    "AuditEntry",
    "HistoryPoint",
    "KnownRepository",
    "Store",
    "StoredRun",
    "database_url",
    "head_revision",
    "migrate",
    "open_store",
    "revision",
]
