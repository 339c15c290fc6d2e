"""The exception hierarchy of council.

Every error a user can cause or meet is one of these; the CLI prints ``str(error)`` as a single line and
exits non-zero, with no traceback. Provider errors from litellm are translated into ``ModelCallError``
subclasses by the gateway (the only module that sees litellm's own exceptions), carrying provider, HTTP
status and request id.

    CouncilError
    ├── ConfigError              config file missing or invalid, unknown model, missing API key env var
    ├── InputError               empty question, question too long for every member, unreadable image
    ├── QualificationError       no model in the catalog meets a policy's requirements
    ├── BudgetExceeded           a call's worst-case cost would overspend the run's budget
    ├── StoreError               the database could not be opened or written
    │   └── RunNotFound          no run with that id
    └── ModelCallError           one model call failed (always recorded as a call record first)
        ├── TransientError       worth falling back or retrying: 429, 5xx, timeout, connection refused
        │   ├── RateLimited
        │   ├── ProviderUnavailable
        │   └── CallTimeout
        ├── PermanentError       retrying the same request will not help: auth, bad request, not found
        └── InvalidAnswer        the model answered, but not with valid structured output
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "one_line_errors",
    "BudgetExceeded",
    "CallTimeout",
    "ConfigError",
    "CouncilError",
    "InputError",
    "InvalidAnswer",
    "ModelCallError",
    "PermanentError",
    "ProviderUnavailable",
    "QualificationError",
    "RateLimited",
    "RunNotFound",
    "StoreError",
    "TransientError",
]


class CouncilError(Exception):
    """Base of every error council raises on purpose."""


class ConfigError(CouncilError):
    """The configuration cannot be used as given."""


class InputError(CouncilError):
    """The question, claim or attachment cannot be deliberated."""


class QualificationError(CouncilError):
    """No model in the catalog qualifies for a policy."""


class BudgetExceeded(CouncilError):
    """A reservation would take the run past its budget ceiling."""


class StoreError(CouncilError):
    """The database could not be opened, migrated or written."""


class RunNotFound(StoreError):
    """No run with the given id exists in the store."""


class ModelCallError(CouncilError):
    """One model call failed.

    ``kind`` is the stable error kind written to the call record (``rate_limit``, ``timeout``, ...).
    """

    kind: str = "error"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        raw_text: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after
        self.raw_text = raw_text


class TransientError(ModelCallError):
    """Another attempt or the next model in the chain may succeed."""

    kind = "transient"


class RateLimited(TransientError):
    kind = "rate_limit"


class ProviderUnavailable(TransientError):
    kind = "server_error"


class CallTimeout(TransientError):
    kind = "timeout"


class PermanentError(ModelCallError):
    """The request itself is wrong for this model; try the next model, never the same one again."""

    kind = "permanent"


class InvalidAnswer(ModelCallError):
    """The model answered, but its text is not valid structured output for the schema."""

    kind = "invalid_answer"


def one_line_errors(interrupted: str = "error: interrupted", eof_interrupts: bool = False) -> Callable[[Any], Any]:
    """A decorator for a command: council's own errors become one line on stderr and exit code 1, never a
    traceback; Ctrl-C (and end of input, with ``eof_interrupts``) prints ``interrupted`` and exits 130."""
    import functools

    stops: tuple[type[BaseException], ...] = (KeyboardInterrupt, EOFError) if eof_interrupts else (KeyboardInterrupt,)

    def decorate(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import typer

            try:
                return fn(*args, **kwargs)
            except CouncilError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None
            except stops:
                typer.echo(interrupted, err=True)
                raise typer.Exit(130) from None

        return wrapper

    return decorate
