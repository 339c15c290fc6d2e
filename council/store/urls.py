"""Where the store lives: turning what a user names (``--db``, ``COUNCIL_DB``, a config's ``database``,
``Council(db=...)``) into a SQLAlchemy URL, and the default SQLite file in the user data directory."""

from __future__ import annotations

import os
from pathlib import Path

from council.config.settings import CouncilConfig
from council.errors import StoreError

__all__ = ["DB_ENV", "default_db_url", "resolve_db_url"]

DB_ENV = "COUNCIL_DB"


def default_db_url() -> str:
    """``COUNCIL_DB`` if set, else a SQLite file in the user data directory."""
    return resolve_db_url(None)


def _default_location() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("council", appauthor=False)) / "council.db"


def resolve_db_url(db: str | os.PathLike[str] | None = None, *, config: CouncilConfig | None = None) -> str:
    """The one place that turns what a user names into a SQLAlchemy URL, for the CLI (``--db``) and the API
    (``Council(db=...)``) alike. The first given of: ``db``; the config's ``database`` (a relative path is
    relative to the config file); ``COUNCIL_DB``; ``council.db`` in the user data directory.

    Each may be a URL (anything with ``://``) or a SQLite file path (``~`` expanded, made absolute). A
    database in a directory that does not exist is an error (``StoreError``), so a typo in ``--db`` never
    creates a tree of folders; only the default location's folder is created (by ``Store``)."""
    base: Path | None = None
    if db is None and config is not None and config.database:
        db = config.database
        base = Path(config.source).expanduser().resolve().parent if config.source else None
    if db is None:
        db = os.environ.get(DB_ENV) or None
    if db is None:
        return f"sqlite:///{_default_location()}"
    name = os.fspath(db).strip()
    if not name:
        raise StoreError("the database is empty: give a SQLAlchemy URL or a SQLite file path")
    if "://" in name:
        if name.startswith("sqlite:///") and name not in ("sqlite:///", "sqlite:///:memory:"):
            _existing_folder(Path(name.removeprefix("sqlite:///").split("?", 1)[0]))
        return name
    if name == ":memory:":
        return "sqlite:///:memory:"
    path = Path(name).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    path = path.resolve()
    _existing_folder(path)
    return f"sqlite:///{path}"


def _existing_folder(path: Path) -> None:
    if path.is_dir():
        raise StoreError(f"cannot open database {path}: it is a directory (name a file in it, e.g. {path / 'council.db'})")
    if not path.parent.is_dir():
        raise StoreError(f"cannot open database {path}: the directory {path.parent} does not exist (create it first)")


def _with_driver(url: str) -> str:
    """Plain ``postgresql://`` URLs use psycopg 3 (a dependency), not SQLAlchemy's default psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
