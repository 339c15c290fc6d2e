"""``council check FILE --engine ray``: a batch's claims checked by Ray actors, on one machine or a cluster.

The driver (the process the user started) reads the input, records the batch and its claims in the
database exactly as a local batch does, and starts ``workers`` actors (``ray_worker.ClaimWorker``), each
with one CPU and its share of ``concurrency``. The actors take claims from the database by atomic lease,
so the database, not Ray, decides who checks what; Ray only places and restarts the actors. Every side
effect is keyed (claims by batch and item, runs by a deterministic id, call records by run/node/label/
attempt, budget holds by hold id) and written insert-or-ignore or by conditional update, so a task Ray
retries or an actor it restarts never produces a second call record or a second result.

While they work, the driver polls the actors' counters (and the database for how many claims are left)
and feeds the same ``BatchProgress`` to ``on_progress`` as a local run; at the end it builds the same
``BatchReport`` from the database. Without ``ray_address``, a local Ray instance (loopback only) is
started and stopped; usage statistics are always switched off.
"""

from __future__ import annotations

import asyncio
import logging
import contextlib
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from council.errors import ConfigError, CouncilError, InputError, StoreError
from .ray_worker import ClaimWorker, WorkerProgress, WorkerSpec

__all__ = ["acheck_many_ray", "connect", "NAMESPACE"]

log = logging.getLogger("council.batch")

NAMESPACE = "council"
"""The Ray namespace of the batch actors (named ``council-<batch>-<token>-<i>``)."""
_POLL_S = 0.5
_FORWARDED_ENV = ("LITELLM_LOCAL_MODEL_COST_MAP", "COUNCIL_CONFIG")
_ACTOR_GONE = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError")


def _ray() -> Any:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before ray is imported: nothing leaves the cluster
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError('--engine ray needs Ray: pip install "council[ray]"') from None
    return ray


def _probe(address: str) -> None:
    """Fail fast on an address nothing listens on (Ray itself retries for minutes)."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc} "
                          "(is the head node running? `ray status` on it shows its address)") from None


def connect(address: str | None, workers: int) -> tuple[Any, bool]:
    """Connect this process to Ray; return (ray, whether this call started it and must shut it down).

    ``address``: ``auto`` (the cluster this machine belongs to), ``HOST:PORT`` or ``ray://HOST:PORT``; None
    starts a local instance with ``workers`` CPUs, on loopback. An existing connection is reused."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
    kwargs: dict[str, Any] = dict(runtime_env={"env_vars": env} if env else None, namespace=NAMESPACE,
                                  include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                                  configure_logging=False)
    # Ray's start-up notices ("SIGTERM handler is not set" when the batch's event loop thread connects,
    # "Token authentication is enabled" for a local instance) go nowhere: the user sees the batch's own
    # progress and errors. Its errors still show.
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.ERROR)
    try:
        if address is None:
            # A one-machine instance: Ray keeps every address on loopback rather than the outward one.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", **kwargs)
        else:
            _probe(address)
            ray.init(address=address, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ConfigError(f"cannot connect to {where}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                          ) from None
    finally:
        ray_log.setLevel(level)
    return ray, True


def _refuse_sqlite(ray: Any, store: Any) -> None:
    if not store.url.startswith("sqlite"):
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if store.url == "sqlite:///:memory:" or len(nodes) > 1:
        raise ConfigError(
            f"--engine ray on a cluster of {len(nodes)} nodes cannot use the SQLite database {store.safe_url}: "
            "SQLite is one machine's file. Use a database every node reaches: --db postgresql://USER@HOST/DB")


def _cause(exc: BaseException) -> BaseException:
    """The project's own error inside a Ray task error, else the error itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, CouncilError) else exc


def _not_installed(exc: BaseException) -> ConfigError | None:
    """The error to show when a worker's Python cannot import the project (a node without it installed, or
    a runtime_env whose Python or PYTHONPATH lacks it): Ray reports it as the actor failing to import."""
    text = str(exc)
    missing = re.search(r"No module named '([\w.]+)'", text)
    if missing is None:
        return None
    node = re.search(r"\bip=([\w.:\[\]-]+)", text)
    where = f"on node {node.group(1).rstrip(',')}" if node else "on a node"
    module = missing.group(1)
    what = "council" if module.split(".")[0] == "council" else f"council's dependency {module.split('.')[0]}"
    from council import __version__

    return ConfigError(
        f"a Ray worker {where} cannot import {what} (No module named {module!r}): install the project, "
        f"the driver's version, in the Python every node starts Ray workers with (pip install \"council[ray]=="
        f"{__version__}\"), or run the job with a runtime_env that has it; then rerun the same command")


class _Driver:
    """The actors of one invocation, their counters, and the supervision loop."""

    def __init__(self, ray: Any, spec: WorkerSpec, workers: int, progress: Any,
                 on_progress: Callable[[Any], None] | None, bstore: Any, restarts: int) -> None:
        self.ray, self.spec, self.workers, self.progress = ray, spec, workers, progress
        self.on_progress, self.bstore, self.restarts = on_progress, bstore, restarts
        self.token = uuid.uuid4().hex[:8]
        self.actors: list[Any] = []
        self.snapshots: dict[int, WorkerProgress] = {}
        self.finished: list[WorkerProgress] = []
        self.started_actors = 0
        self.deaths = 0
        self.exhausted = False

    def _start_actor(self) -> tuple[Any, Any]:
        i = self.started_actors
        self.started_actors += 1
        cls = self.ray.remote(ClaimWorker)
        actor = cls.options(name=f"council-{self.spec.batch_id[:12]}-{self.token}-{i}", namespace=NAMESPACE,
                            num_cpus=1, max_restarts=self.restarts, max_task_retries=0,
                            lifetime=None).remote(self.spec)
        self.actors.append(actor)
        return actor, actor.run.remote()

    async def _ready(self, actors: list[Any]) -> None:
        """Wait until one actor is built (the others may wait for room on the cluster), translating why
        it could not be: every actor fails the same way when the project is missing on the nodes."""
        pending = [a.ready.remote() for a in actors]
        done, _ = await asyncio.to_thread(self.ray.wait, pending, num_returns=1)
        try:
            self.ray.get(done[0])
        except Exception as exc:
            cause = _cause(exc)
            if isinstance(cause, CouncilError):
                raise cause from None
            last = (str(exc).strip().splitlines() or [""])[-1][:300]
            raise _not_installed(exc) or ConfigError(
                f"a Ray worker could not start: {type(exc).__name__}: {last}") from None

    def _notify(self) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(self.progress)
            except Exception:
                log.exception("progress callback failed")

    def _refresh(self, base: dict[str, int]) -> int:
        """Counters summed over the actors (a dead actor's last ones are kept), the claims left from the
        store; return how many claims are left (pending or running)."""
        polls = {a.poll.remote(): i for i, a in enumerate(self.actors)}
        ready, _ = self.ray.wait(list(polls), num_returns=len(polls), timeout=2)
        for ref in ready:
            try:
                self.snapshots[polls[ref]] = self.ray.get(ref)
            except Exception:
                pass  # dead or restarting: keep its last counters
        snaps = list(self.snapshots.values())
        p = self.progress
        counts = self.bstore.counts(self.spec.batch_id)
        left = counts.get("pending", 0) + counts.get("running", 0)
        p.done = p.total - left
        p.checked = sum(max(0, counts.get(s, 0) - base.get(s, 0)) for s in ("full", "degraded", "failed", "invalid", "skipped_budget"))
        p.failed = sum(s.failed for s in snaps)
        p.degraded = sum(s.degraded for s in snaps)
        p.skipped_budget = sum(s.skipped_budget for s in snaps)
        p.contested = sum(s.contested for s in snaps)
        p.spent_usd = sum(s.spent_usd for s in snaps)
        return left

    def _collect(self, ref: Any, actor: Any, refs: dict[Any, Any], tries: dict[Any, int]) -> BaseException | None:
        """Take a finished ``run``: its counters, or a fatal error, or (the actor died) run it again on the
        restarted actor. Ray's own task retries are off: they would print to the driver's stdout."""
        try:
            out: WorkerProgress = self.ray.get(ref)
        except Exception as exc:
            cause = _cause(exc)
            if isinstance(cause, CouncilError):
                return cause
            missing = _not_installed(exc)  # a restarted actor on a node without the project, say
            if missing is not None:
                return missing
            if type(exc).__name__ not in _ACTOR_GONE and "actor" not in type(exc).__name__.lower():
                last = (str(exc).strip().splitlines() or [""])[-1][:300]
                return CouncilError(f"a Ray worker failed: {type(cause).__name__}: {last} (rerun the same command "
                                    "to resume the batch)")
            self.deaths += 1
            log.warning("a Ray worker died (%s); its claims are taken over", type(exc).__name__)
            tries[actor] = tries.get(actor, 0) + 1
            if tries[actor] <= self.restarts:  # Ray restarts the actor (max_restarts): give it the work again
                refs[actor.run.remote()] = actor
            return None
        self.finished.append(out)
        self.exhausted = self.exhausted or out.budget_exhausted
        return None

    async def run(self) -> bool:
        """Run the actors until the batch is done (or they ran out of budget); return whether they did."""
        ray = self.ray
        base = self.bstore.counts(self.spec.batch_id)
        fatal: BaseException | None = None
        refs: dict[Any, Any] = {}
        tries: dict[Any, int] = {}
        last = 0.0
        try:
            started = dict(self._start_actor() for _ in range(self.workers))
            await self._ready(list(started))
            refs = {ref: actor for actor, ref in started.items()}
            while refs and fatal is None:
                done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
                for ref in done:
                    fatal = self._collect(ref, refs.pop(ref), refs, tries) or fatal
                if fatal is None and (done or time.monotonic() - last >= _POLL_S):
                    left = await asyncio.to_thread(self._refresh, base)
                    self._notify()  # from the event loop, as a local batch does
                    last = time.monotonic()
                    if not left and self.finished:
                        break  # done, even if a restarted actor is still waiting for a place to run
                    if not refs and left and not self.exhausted:
                        if self.deaths > self.workers * (self.restarts + 2):
                            raise CouncilError(f"the Ray workers kept dying ({self.deaths} times): {left} claims are "
                                               "left; rerun the same command to finish the batch")
                        actor, ref = self._start_actor()  # every worker is gone: start another
                        refs[ref] = actor
                await asyncio.sleep(0.05)
            if refs and fatal is None:  # the others are seeing that nothing is left: let them end cleanly
                done, _ = await asyncio.to_thread(ray.wait, list(refs), num_returns=len(refs), timeout=5)
                for ref in done:
                    self._collect(ref, refs.pop(ref), {}, {})
        finally:
            for a in set(refs.values()):  # only actors still busy (a finished one ends when its handle goes)
                try:
                    ray.kill(a, no_restart=True)
                except Exception:
                    pass
            self.actors.clear()
        if fatal is not None:
            raise fatal
        return self.exhausted


async def acheck_many_ray(claims: Any, *, config: Any = None, db: str | None = None, concurrency: int | None = 8,
                          budget_usd: float | None = None, out: Any = None, batch_id: str | None = None,
                          retry_failed: bool = False, max_claim_chars: int = 4000, lease_s: float = 60.0,
                          workers: int | None = None, ray_address: str | None = None, restarts: int = 3,
                          on_progress: Callable[[Any], None] | None = None,
                          on_bad_row: Callable[[Any], None] | None = None, recipe: str | None = None) -> Any:
    """``check_many(..., engine="ray")``: see the module docstring and ``council.batch.runner.acheck_many``.

    ``workers``: actors (default: the cluster's CPUs, at most 64); ``concurrency``: councils at once over
    all of them; ``ray_address``: an existing cluster (None starts a local instance); ``restarts``: how
    many times Ray restarts a dead actor (and retries its task)."""
    from council.batch.input import read_claims
    from council.batch.runner import _NOT_STARTED, BatchProgress, BatchReport, _bad, _from_row, output_format, write_results
    from council.pipeline.engine import Council
    from council.store.ledger import LedgerBudget, open_batch_ledger
    from council.store.queue import BatchStore, new_owner

    started = time.monotonic()
    if concurrency is None:
        concurrency = 8
    if concurrency < 1:
        raise InputError("concurrency must be at least 1")
    if workers is not None and workers < 1:
        raise InputError("workers must be at least 1")
    if budget_usd is not None and budget_usd <= 0:
        raise InputError("the budget must be positive")
    if out is not None:
        output_format(out)
    parsed = read_claims(claims, task="check", max_claim_chars=max_claim_chars, batch_id=batch_id)
    for b in parsed.bad_rows:
        if on_bad_row is not None:
            on_bad_row(b)
    council = Council(config, db=db, recipe=recipe)
    store = council.store
    bstore = BatchStore(store)
    bid = parsed.batch_id
    bstore.register(bid, "check", parsed.source, parsed.items)
    bstore.prepare_rerun(bid, retry_failed)
    bstore.reclaim(bid)
    ledger = open_batch_ledger(store, bid, budget_usd, bstore.spent_usd(bid)) if budget_usd is not None else None
    spent_before = bstore.spent_usd(bid)
    counts = bstore.counts(bid)
    progress = BatchProgress(total=sum(v for k, v in counts.items() if k != "contested") + len(parsed.bad_rows),
                             done=sum(counts.get(s, 0) for s in ("full", "degraded", "failed", "invalid"))
                             + len(parsed.bad_rows), started=started)
    exhausted = LedgerBudget(store, batch_ledger=ledger, owner=new_owner()).remaining_usd <= 1e-12
    if on_progress is not None:
        on_progress(progress)
    if exhausted:
        bstore.skip_pending(bid, _NOT_STARTED)
    elif counts.get("pending", 0) or counts.get("running", 0):
        # Ray prints its notices ("(raylet) The node ... marked dead", backlogged ones when a driver connects)
        # on the driver's stdout: keep them on stderr, so `--out -` and `--json` stay clean.
        with contextlib.redirect_stdout(sys.stderr):
            ray, own = connect(ray_address, workers or os.cpu_count() or 1)
            try:
                _refuse_sqlite(ray, store)
                n = workers or max(1, min(64, int(ray.cluster_resources().get("CPU", 1))))
                spec = WorkerSpec(config=council.config, db=store.url, recipe=council.recipe.name, batch_id=bid,
                                  batch_ledger=ledger, concurrency=max(1, concurrency // n), lease_s=lease_s)
                driver = _Driver(ray, spec, n, progress, on_progress, bstore, restarts)
                try:
                    exhausted = await driver.run()
                except StoreError as exc:  # the database went away (the driver's or an actor's connection)
                    raise StoreError(f"{exc} (the batch stopped; nothing is lost: rerun the same command once the "
                                     "database answers)") from None
            finally:
                if own:
                    ray.shutdown()
        if exhausted:
            bstore.skip_pending(bid, _NOT_STARTED)
    counts = bstore.counts(bid)
    results = [_from_row(r) for r in bstore.iter_items(bid)]
    if parsed.bad_rows:
        results = sorted(results + [_bad(b) for b in parsed.bad_rows], key=lambda r: r.line)
    status_counts = {k: v for k, v in counts.items() if k != "contested"}
    if parsed.bad_rows:
        status_counts["invalid"] = status_counts.get("invalid", 0) + len(parsed.bad_rows)
    report = BatchReport(
        batch_id=bid, source=parsed.source, database=store.safe_url, results=results, counts=status_counts,
        contested=counts.get("contested", 0), checked=progress.checked,
        total_cost_usd=round(sum(r.cost_usd for r in results), 10),
        spent_usd=round(bstore.spent_usd(bid) - spent_before, 10), budget_usd=budget_usd,
        budget_exhausted=exhausted, elapsed_s=time.monotonic() - started,
    )
    if out is not None:
        write_results(out, report.results)
    return report
