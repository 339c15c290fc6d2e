"""Stable ids: content hashes, never list positions, so a rebuilt run has the same ids.

Every id and content version in council comes from ``content_id`` (claims, answers, clusters, call ids,
batch run ids, sources and passages, policy and prompt versions); only the length differs by use.
"""

from __future__ import annotations

import hashlib

__all__ = ["content_id"]


def content_id(*parts: str | bytes, length: int = 16, sep: str = "|") -> str:
    """``length`` hex digits of sha256 over the parts joined by ``sep`` (bytes are hashed as they are)."""
    h = hashlib.sha256()
    for i, part in enumerate(parts):
        if i:
            h.update(sep.encode())
        h.update(part if isinstance(part, bytes) else part.encode())
    return h.hexdigest()[:length]
