"""How the service is configured: address, token, limits, CORS, and where the council and its store are."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, Field

from council.errors import ConfigError

__all__ = ["TOKEN_ENV", "ServeSettings", "is_loopback"]

TOKEN_ENV = "COUNCIL_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServeSettings(BaseModel):
    """Everything ``council serve`` is started with."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires ``token``."""
    port: int = Field(default=8321, ge=0, le=65535)
    """TCP port (0: any free port)."""
    config: Path | None = None
    """Council config TOML (None: $COUNCIL_CONFIG, else the local demonstration panel, as in the CLI)."""
    db: str | None = None
    """Database URL overriding the config's (None: the config's, else $COUNCIL_DB or the default file)."""
    token: str | None = None
    """Bearer token every route requires (also accepted as the ``council_token`` cookie set by /login)."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser; empty: CORS off (same origin only)."""
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    """Largest request body accepted (413 above)."""
    max_question_chars: int = Field(default=8_000, gt=0)
    """Longest question or claim accepted (413 above)."""
    max_sources: int = Field(default=20, ge=0)
    """Most source documents one request may carry."""
    max_source_chars: int = Field(default=200_000, gt=0)
    """Longest source document accepted."""
    max_concurrent_runs: int = Field(default=64, gt=0)
    """Councils running at once; further requests get 429 until one finishes."""
    keepalive_s: float = Field(default=5.0, gt=0)
    """Seconds between keep-alive progress messages on a streaming chat completion."""
    poll_s: float = Field(default=0.2, gt=0)
    """How often a run's event stream looks at the store for news."""

    def check(self) -> ServeSettings:
        """Refuse to serve beyond loopback without a token; fill the token from $COUNCIL_SERVE_TOKEN."""
        token = self.token or os.environ.get(TOKEN_ENV) or None
        if token is not None and len(token) < 16:
            raise ConfigError("the serve token must be at least 16 characters")
        if not is_loopback(self.host) and token is None:
            raise ConfigError(f"binding to {self.host} (not loopback) requires a token: pass --token or set {TOKEN_ENV}")
        return self.model_copy(update={"token": token})
