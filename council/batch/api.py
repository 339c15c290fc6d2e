"""The batch entry points with a choice of engine: ``check_many(claims, engine="local" | "ray", ...)``.

``engine="local"`` (default) is ``council.batch.runner.acheck_many``: this process, and ``processes - 1``
helper processes. ``engine="ray"`` is ``council.batch.engines.ray_engine.acheck_many_ray``: ``workers`` Ray
actors on a local Ray instance or the cluster at ``ray_address``, the batch's budget kept in the database.
Every other argument means the same for both (see ``runner.acheck_many``).
"""

from __future__ import annotations

from typing import Any, Literal

from council._sync import run_sync
from council.errors import InputError
from .runner import BatchReport

__all__ = ["acheck_many", "check_many"]


async def acheck_many(claims: Any, *, engine: Literal["local", "ray"] = "local", workers: int | None = None,
                      ray_address: str | None = None, **kwargs: Any) -> BatchReport:
    """Fact-check every claim of ``claims`` on the chosen engine (see the module docstring)."""
    if engine == "ray":
        from .engines.ray_engine import acheck_many_ray

        if kwargs.pop("processes", 1) != 1:
            raise InputError("--processes is for the local engine: with --engine ray, use --workers")
        kwargs.pop("_helper", None)
        kwargs.pop("_rate_limit_share", None)  # a Ray run has no helper processes to share limits with
        return await acheck_many_ray(claims, workers=workers, ray_address=ray_address, **kwargs)
    if engine != "local":
        raise InputError(f"unknown engine {engine!r}: use local or ray")
    if workers is not None or ray_address is not None:
        raise InputError("--workers and --ray-address need --engine ray")
    from .runner import acheck_many as local

    return await local(claims, **kwargs)


def check_many(claims: Any, **kwargs: Any) -> BatchReport:
    """Sync form of ``acheck_many`` (same arguments)."""
    return run_sync(acheck_many(claims, **kwargs))
