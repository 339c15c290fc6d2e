"""Provider rate limits as configured: per model entry or per provider, and where they are counted.

    [rate_limits]
    storage = "redis://127.0.0.1:6379/0"   # optional: shared by every process using it; default in memory
    namespace = "prod"                     # optional: keeps unrelated deployments apart in one storage

    [rate_limits.models.gpt-4o-mini]       # a catalog name from [models]
    rpm = 500                              # requests per minute
    tpm = 200000                           # tokens per minute: prompt estimate + max_tokens of each call
    concurrent = 16                        # requests in flight at once

    [rate_limits.providers.openai]         # every model of this provider together
    rpm = 3000

Nothing is limited unless it is set here. The limits are data only; ``council.calls.ratelimit`` enforces
them. Validation that needs the resolved catalog (a provider no model has) happens there, when the
limiter is built, before any call is made.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Limits", "RateLimitConfig"]


class Limits(BaseModel):
    """The limits of one model or one provider; a field left unset is not limited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int | None = Field(default=None, gt=0)
    """Requests per minute (any 60-second window), counted when a request is sent."""
    rps: int | None = Field(default=None, gt=0)
    """Requests per second (any 1-second window), for providers that state per-second limits."""
    tpm: int | None = Field(default=None, gt=0)
    """Tokens per minute: each call counts its prompt estimate plus its ``max_tokens`` (the worst case,
    as providers such as OpenAI count it) when it is sent."""
    concurrent: int | None = Field(default=None, gt=0)
    """Requests in flight at once. Counted per process; with ``--processes N`` each process holds an equal
    share (at least one)."""

    @model_validator(mode="after")
    def _something_set(self) -> Limits:
        if self.rpm is None and self.rps is None and self.tpm is None and self.concurrent is None:
            raise ValueError("set at least one of rpm, rps, tpm, concurrent")
        return self


class RateLimitConfig(BaseModel):
    """The ``[rate_limits]`` table of a config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    storage: str | None = None
    """Where the limits are counted: None or ``memory://`` (this process only), or a ``redis://`` /
    ``rediss://`` URL shared by every process and machine using it (``council check -p N``, Ray workers,
    several ``council`` commands at once). An unreachable URL is an error before any call is made."""
    namespace: str = Field(default="council", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    """Prefix of the keys in a shared storage: configs with the same namespace share their counts."""
    models: dict[str, Limits] = Field(default_factory=dict)
    """Catalog name -> the limits of that model."""
    providers: dict[str, Limits] = Field(default_factory=dict)
    """Provider name (``openai``, ``anthropic``, ... as in ``council models``) -> limits shared by all its models."""

    @property
    def shared(self) -> bool:
        """True when the counts live outside this process."""
        return self.storage is not None and not self.storage.startswith("memory://")
