"""Stable ids: content hashes, never list positions, so a rebuilt run has the same ids."""

from __future__ import annotations

import hashlib

__all__ = ["content_id"]


def content_id(*parts: str) -> str:
    """16 hex digits of sha256 over the parts joined by ``|``."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
