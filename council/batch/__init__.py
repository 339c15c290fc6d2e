"""Batches of fact checks: input files (JSONL/CSV), the batch runner with its shared budget and helper
processes, and the ``council check`` command. ``python -m council.batch FILE`` runs the command alone.

``from council.batch import check_many, acheck_many, BatchReport`` (imported lazily, so that the CLI's
start-up does not pay for the runner).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BatchProgress", "BatchReport", "ItemResult", "acheck_many", "check_many"]


def __getattr__(name: str) -> Any:
    if name in ("acheck_many", "check_many"):  # with the choice of engine (local or ray)
        from . import api

        return getattr(api, name)
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
