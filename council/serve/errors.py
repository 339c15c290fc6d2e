"""Council's errors as HTTP responses, with nothing internal in them.

Input problems are told as they are (the user can fix them). Configuration and store problems are the
operator's: the response says what kind of problem it is and the detail goes to the server log only,
because their messages name files, database URLs and environment variables.
"""

from __future__ import annotations

import logging

from council.errors import (
    BudgetExceeded, ConfigError, CouncilError, InputError, ModelCallError, QualificationError, RunNotFound, StoreError,
)
from .runs import Busy

__all__ = ["public_error"]

log = logging.getLogger("council.serve")


def public_error(exc: BaseException) -> tuple[int, str, str]:
    """(HTTP status, error type, message safe to show) for ``exc``."""
    if isinstance(exc, RunNotFound):
        return 404, "not_found", "no such run"
    if isinstance(exc, Busy):
        return 429, "busy", str(exc)
    if isinstance(exc, InputError):
        return 400, "invalid_request_error", str(exc)
    if isinstance(exc, QualificationError):
        return 400, "no_qualified_model", str(exc)
    if isinstance(exc, BudgetExceeded):
        return 402, "budget_exceeded", str(exc)
    if isinstance(exc, ConfigError):
        log.error("configuration error: %s", exc)
        return 503, "configuration_error", "the service's council configuration is invalid (see the server log)"
    if isinstance(exc, StoreError):
        log.error("store error: %s", exc)
        return 503, "store_error", "the service's database is unavailable (see the server log)"
    if isinstance(exc, ModelCallError):
        return 502, "model_error", f"a model call failed: {type(exc).__name__}"
    if isinstance(exc, CouncilError):
        return 500, "council_error", type(exc).__name__
    log.exception("unexpected error", exc_info=exc)
    return 500, "internal_error", "internal error (see the server log)"
