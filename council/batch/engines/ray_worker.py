"""The Ray actor of a batch: one asyncio event loop running the same council code as a local batch.

``ClaimWorker`` is a plain class; the driver wraps it with ``ray.remote`` (this module never imports
ray). An actor builds one ``Council`` against the shared database, with a ``LedgerBudget`` (the batch's
budget and the database's ceilings, decided by the database), and runs the local batch runner
(``council.batch.runner._Runner``) on it: it takes claims by atomic lease, runs up to ``concurrency``
councils at once, heartbeats its leases and records each outcome keyed by batch and claim. Nothing it
does is kept only in memory, so Ray may retry its task or restart it at will: a restarted actor is a new
lease owner, the claims of the dead one are taken over when its lease lapses (at once when its process is
seen dead on the same host), and a resumed run numbers its calls after the recorded ones.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from pydantic import BaseModel

__all__ = ["ClaimWorker", "WorkerProgress", "WorkerSpec"]

log = logging.getLogger("council.batch")


class WorkerSpec(BaseModel):
    """What every actor of a batch is built from (sent once, at actor creation)."""

    config: Any
    """The driver's loaded ``CouncilConfig`` (so workers need no config file), or None for the demo panel."""
    db: str
    """The shared database's URL (PostgreSQL across machines)."""
    recipe: str = "council"
    batch_id: str
    batch_ledger: str | None = None
    """The batch's budget ledger, when the batch has a budget."""
    concurrency: int = 8
    """Councils this actor runs at once."""
    lease_s: float = 60.0


class WorkerProgress(BaseModel):
    """One actor's counters, polled by the driver for its progress bar."""

    owner: str
    """The actor's lease owner name (``host:pid:token``)."""
    node: str
    """Host name of the node it runs on."""
    checked: int = 0
    failed: int = 0
    degraded: int = 0
    skipped_budget: int = 0
    contested: int = 0
    spent_usd: float = 0.0
    """What this actor's calls cost (settled in the ledger)."""
    budget_exhausted: bool = False
    done: bool = False


class ClaimWorker:
    """A batch worker; the driver creates it with ``ray.remote(ClaimWorker).options(...).remote(spec)``."""

    def __init__(self, spec: WorkerSpec) -> None:
        from council.pipeline.engine import Council
        from council.store.db import Store
        from council.store.ledger import LedgerBudget
        from council.store.queue import BatchStore, new_owner

        self.spec = spec
        self.owner = new_owner()
        store = Store(spec.db)
        self.budget = LedgerBudget(store, batch_ledger=spec.batch_ledger, owner=self.owner)
        self.council = Council(spec.config, db=spec.db, recipe=spec.recipe, budget=self.budget)
        self.council.store.reliability_ttl_s = 5.0
        self.bstore = BatchStore(self.council.store)
        self.runner: Any = None
        self.finished = False

    async def ready(self) -> str:
        """The owner name, once the actor is built (imports done, database reached)."""
        return self.owner

    async def run(self) -> WorkerProgress:
        """Check claims of the batch until none is left that this actor can take (or afford)."""
        from council.batch.runner import BatchProgress, _Runner

        progress = BatchProgress(total=0)
        self.runner = _Runner(self.council, self.bstore, self.spec.batch_id, self.owner,
                              concurrency=self.spec.concurrency, budget=self.budget, lease_s=self.spec.lease_s,
                              progress=progress, on_progress=None)
        await self.runner.run()
        self.finished = True
        return self.progress()

    def progress(self) -> WorkerProgress:
        r = self.runner
        p = r.progress if r is not None else None
        return WorkerProgress(
            owner=self.owner, node=socket.gethostname(), checked=p.checked if p else 0, failed=p.failed if p else 0,
            degraded=p.degraded if p else 0, skipped_budget=p.skipped_budget if p else 0,
            contested=p.contested if p else 0, spent_usd=self.budget.spent_usd,
            budget_exhausted=bool(r and r.budget_exhausted), done=self.finished,
        )

    async def poll(self) -> WorkerProgress:
        return self.progress()

    async def pid(self) -> int:
        """The actor's process id (for tests and operators that must stop one)."""
        return os.getpid()
