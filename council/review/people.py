"""Who is reviewing: the reviewer's name comes from ``--reviewer`` or ``COUNCIL_REVIEWER``, never guessed."""

from __future__ import annotations

import os

from council.errors import InputError

__all__ = ["REVIEWER_ENV", "reviewer_name"]

REVIEWER_ENV = "COUNCIL_REVIEWER"


def reviewer_name(given: str | None) -> str:
    """``given`` if set, else ``$COUNCIL_REVIEWER``; an InputError when neither names anyone."""
    name = (given if given is not None else os.environ.get(REVIEWER_ENV, "")).strip()
    if not name:
        raise InputError(f"no reviewer: pass --reviewer NAME or set {REVIEWER_ENV}")
    if len(name) > 200:
        raise InputError("the reviewer's name is longer than 200 characters")
    return name
