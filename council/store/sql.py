"""SQL helpers of the store's hot path: upserts without the ORM, and SQLite connection settings."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlmodel import SQLModel

__all__ = ["defaults", "sqlite_pragmas", "upsert"]


@lru_cache(maxsize=None)
def defaults(model: type[SQLModel]) -> dict[str, Any]:
    """Column -> default value of a table model, for rows written as plain values."""
    from pydantic_core import PydanticUndefined

    return {name: f.default for name, f in model.model_fields.items()
            if f.default is not PydanticUndefined and f.default_factory is None}


@lru_cache(maxsize=None)
def upsert(dialect: str, table: Any) -> Any:
    """``INSERT ... ON CONFLICT (primary key) DO UPDATE`` for ``table``, or None where unsupported. One
    statement per row instead of the ORM's SELECT-then-write merge: the store's writes are on the hot path
    of every council (a batch makes tens of them per claim)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    stmt = insert(table)
    pk = [c.name for c in table.primary_key.columns]
    rest = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in pk}
    return stmt.on_conflict_do_update(index_elements=pk, set_=rest) if rest else stmt.on_conflict_do_nothing(index_elements=pk)


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers never block the writer (several `council` processes on one file, `council stats` during
    # a batch) and a commit does not fsync the whole database; synchronous=NORMAL still keeps every
    # committed transaction when the process is killed (only a power cut may lose the last ones).
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()
