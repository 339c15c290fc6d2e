"""Helper processes for a batch: more cores on the same claims.

One Python process checking claims spends most of its time on CPU (litellm's request handling, the
graph, the store), so a batch on several cores runs several processes. They need no coordination beyond
the store: each takes claims by atomic lease (``council.batch_store``), exactly as two ``council check``
commands started by hand would. The process the user started (the parent) starts the helpers as
``python -m council.batch ... --helper-of PID``, gives each an equal share of what is left of the budget
(so together they cannot exceed it), keeps the progress counters of the whole batch from the store while
they work, and waits for them. A helper dies with its parent (``PR_SET_PDEATHSIG`` on Linux); if one
dies on its own, the parent takes over its claims when it finds the owner gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

__all__ = ["Helpers", "die_with_parent"]

log = logging.getLogger("council.batch")
_POLL_S = 1.0
_FINAL = ("full", "degraded", "failed", "invalid", "skipped_budget")


class Helpers:
    """``async with Helpers(n, ...)``: n helper processes running while the block runs (n may be 0)."""

    def __init__(self, n: int, claims: Any, *, config: Any, db: str | None, batch_id: str, concurrency: int,
                 max_claim_chars: int, budget_share: float | None, runner: Any, rate_limit_share: int = 1,
                 recipe: str | None = None) -> None:
        self.n, self.runner = n, runner
        self.procs: list[asyncio.subprocess.Process] = []
        self.poller: asyncio.Task[None] | None = None
        if n == 0:
            return
        args = [sys.executable, "-m", "council.batch", os.fspath(claims), "--batch-id", batch_id, "-j", str(concurrency),
                "--max-claim-chars", str(max_claim_chars), "--quiet", "--exit-zero", "--helper-of", str(os.getpid()),
                "--rate-limit-share", str(rate_limit_share)]
        if config is not None:
            args += ["--config", os.fspath(config)]
        if db is not None:
            args += ["--db", db]
        if budget_share is not None:
            args += ["--budget-usd", repr(budget_share)]
        if recipe is not None:
            args += ["--recipe", recipe]
        self.args = args

    async def __aenter__(self) -> Helpers:
        if self.n:
            r = self.runner
            self.base = r.bstore.counts(r.batch_id)
            self.spent_base = r.bstore.spent_usd(r.batch_id)
        for _ in range(self.n):
            self.procs.append(await asyncio.create_subprocess_exec(
                *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE))
        if self.procs:
            self.poller = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:  # interrupted or failed: stop the helpers too (they give their claims back)
            for p in self.procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGINT)
        for p in self.procs:
            # Normally a helper ends by itself once nothing is left it can take (or afford): wait for it.
            try:
                _, err = await asyncio.wait_for(p.communicate(), timeout=30 if exc is not None else None)
            except (TimeoutError, asyncio.TimeoutError):
                p.kill()
                await p.wait()
                continue
            if p.returncode not in (0, 130, -signal.SIGINT):
                last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
                log.warning("a helper process exited with status %s: %s", p.returncode, last[0])
        if self.poller is not None:
            self.poller.cancel()
        if self.procs and exc is None:
            self._refresh()

    def _refresh(self) -> None:
        """The counters of this invocation, every process included, from the store."""
        r, p = self.runner, self.runner.progress
        counts = r.bstore.counts(r.batch_id)

        def new(status: str) -> int:
            return max(0, counts.get(status, 0) - self.base.get(status, 0))

        p.checked = sum(new(s) for s in _FINAL)
        p.done = p.total - counts.get("pending", 0) - counts.get("running", 0)
        p.failed, p.degraded, p.skipped_budget, p.contested = new("failed"), new("degraded"), new("skipped_budget"), new("contested")
        p.spent_usd = r.bstore.spent_usd(r.batch_id) - self.spent_base
        r._notify()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(_POLL_S)
            try:
                self._refresh()
            except Exception:  # a progress display must never stop the batch
                log.debug("could not refresh the batch counters", exc_info=True)


def die_with_parent(parent_pid: int) -> None:
    """In a helper: be killed when the parent dies (Linux), and exit now if it already has."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: a helper outliving its parent finishes its claims and exits
    if os.getppid() != parent_pid:
        raise SystemExit(0)
