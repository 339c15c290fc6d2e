"""Persistence: the store (sqlmodel tables, named migrations, row mapping), the batch queue's tables and
leases, resume helpers, time windows and DataFrame views of stored records.

``Store`` and its read models are re-exported here: ``from council.store import Store``.
"""

from .db import DB_ENV, RunSummary, Store, StoredRun, default_db_url, resolve_db_url

__all__ = ["DB_ENV", "RunSummary", "Store", "StoredRun", "default_db_url", "resolve_db_url"]
