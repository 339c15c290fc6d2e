"""SQL helpers of the store: the one dialect switch (upserts and insert-or-ignore without the ORM), the one
place where SQLAlchemy's errors become ``StoreError``, and SQLite connection settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from council.errors import StoreError

__all__ = ["defaults", "dialect_insert", "insert_or_ignore", "sqlite_pragmas", "store_errors", "upsert"]


@contextmanager
def store_errors(action: str, where: str) -> Iterator[None]:
    """Turn a SQLAlchemy error raised in the block into ``StoreError("cannot <action> <where>: ...")``,
    naming the error's type and its first line (never the URL's password: ``where`` is the safe URL)."""
    try:
        yield
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or (exc.args[0] if exc.args else "")).strip().splitlines()
        first = f": {detail[0][:200]}" if detail else ""
        raise StoreError(f"cannot {action} {where}: {type(exc).__name__}{first}") from exc


def dialect_insert(dialect: str, table: Any) -> Any:
    """The dialect's own ``INSERT`` (with ``ON CONFLICT`` support) for ``table``, or None where the store
    has none (other databases go through the ORM or one existence check per row)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    return insert(table)


@lru_cache(maxsize=None)
def insert_or_ignore(dialect: str, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for ``table``, or None where unsupported."""
    stmt = dialect_insert(dialect, table)
    return None if stmt is None else stmt.on_conflict_do_nothing()


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
    stmt = dialect_insert(dialect, table)
    if stmt is None:
        return None
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
