"""Batch fact checks: one council per claim, many at once, resumable, within one budget.

    report = council.check_many("claims.jsonl", config="council.toml", concurrency=8, budget_usd=5.0,
                                out="results.csv")
    python -m council.batch claims.jsonl --out results.jsonl      # the same as `council check ...`

How a batch runs (``acheck_many``):

1. The input is read (``council.batch_input``): items, and bad rows with their line numbers (skipped).
2. The batch and its items are recorded in the store (``council.batch_store``), idempotently: the batch
   id comes from the file's content and the task, each item's run id from the batch and the item, so
   rerunning the same command finds the same batch and the same runs.
3. ``concurrency`` workers each take one pending item at a time by an atomic lease, run its council and
   record the outcome. A heartbeat renews the leases while they work, so several processes can share one
   database (SQLite or PostgreSQL) without doing the same claim twice; ``processes=N`` starts the helper
   processes itself (``council.batch_procs``), since one process is bound to one CPU core.
4. Resume: items already finished are skipped. An item whose process died is taken over (its lease
   expired, or its owner is a dead process on this host) and its run resumed (``council.resume``):
   member answers already stored are kept, pending call records become ``interrupted``, new attempts are
   numbered after the recorded ones. Every real model call has exactly one call record.
5. Budget: one ``Budget`` is shared by every council of the batch, and already holds what the batch's
   earlier invocations spent. Every call reserves its worst case before it is sent and settles after, so
   the limit holds however many councils run at once. When a reservation is refused, no new claim is
   started; the claims that could not finish, and those never started, end ``skipped_budget`` (a rerun
   with a larger budget finishes them, reusing the answers already paid for).

Statuses: ``full`` (every member answered, the verdict is settled or adjudicated), ``degraded`` (a
verdict, but a member or the adjudicator failed, or the quorum was not met), ``failed`` (no verdict: no
member answered, or the run raised), ``skipped_budget``, ``invalid`` (a bad row, or a source that cannot
be read). ``contested`` is a separate flag: some claim cluster stayed unresolved, or the label rests on
an unsettled vote because the adjudicator could not rule.
"""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from council._sync import run_sync
from .input import DEFAULT_MAX_CLAIM_CHARS, BadRow, read_claims
from council.errors import ConfigError, CouncilError, InputError, StoreError

__all__ = ["BatchProgress", "BatchReport", "ItemResult", "OUTPUT_FIELDS", "acheck_many", "check_many",
           "output_format", "write_results"]

log = logging.getLogger("council.batch")

ItemStatus = Literal["full", "degraded", "failed", "skipped_budget", "invalid", "pending", "running"]
OUTPUT_FIELDS = ["line", "id", "status", "label", "confidence", "agreement", "degraded", "contested", "needs_review",
                 "review_reasons", "review_label", "cost_usd", "run_id", "error", "warnings", "claim"]
_BUDGET_OUT = "the batch budget ran out before this claim could finish; rerun with a larger --budget-usd"
_WATCH_S = 0.5
_NOT_STARTED = "not started: the batch budget ran out; rerun with a larger --budget-usd"


class ItemResult(BaseModel):
    """How one claim of the batch ended: one line of the results file."""

    line: int
    """Line of the input the claim is on."""
    id: str
    """The input's id, else the hash of the claim's content."""
    status: ItemStatus
    label: str | None = None
    """SUPPORTED, REFUTED or NOT_ENOUGH_INFO; None (with confidence and agreement) when there is no verdict
    (``failed``, ``skipped_budget``, ``invalid``)."""
    confidence: float | None = None
    agreement: float | None = None
    degraded: bool | None = None
    contested: bool = False
    needs_review: bool = False
    """The policy's review conditions flagged the verdict for a person (``council review``)."""
    review_reasons: str | None = None
    """The review conditions that fired, ``condition: detail`` joined by ``; ``."""
    review_label: str | None = None
    """A reviewer's decision on the verdict, if one is recorded (the latest)."""
    cost_usd: float = 0.0
    """What the claim's model calls cost, every try included."""
    run_id: str | None = None
    """The run in the store (``council show RUN_ID``)."""
    error: str | None = None
    """Why the claim failed, degraded, was skipped or is invalid."""
    warnings: str | None = None
    """What the verdict records about attempts to steer it: the adjudicator overruled the vote, a ruling
    was rejected, a member's or a source's text looked like instructions (joined by ``; ``)."""
    claim: str = ""


class BatchReport(BaseModel):
    """What a batch invocation did, and where every claim of the batch stands."""

    batch_id: str
    source: str
    database: str
    results: list[ItemResult]
    """Every claim of the batch and every bad row, in input order."""
    counts: dict[str, int]
    """Claims per status (bad rows count as ``invalid``)."""
    contested: int
    needs_review: int = 0
    """Claims whose verdict was flagged for human review."""
    unreviewed: int = 0
    """Flagged claims with no review decision yet."""
    checked: int
    """Claims this invocation ran (the others were finished before, or are held by another process)."""
    total_cost_usd: float
    """What the whole batch cost so far."""
    spent_usd: float
    """What this invocation spent."""
    budget_usd: float | None
    budget_exhausted: bool
    elapsed_s: float

    @property
    def clean(self) -> bool:
        """Every claim checked and nothing failed or contested."""
        return self.contested == 0 and all(self.counts.get(s, 0) == 0 for s in
                                           ("failed", "skipped_budget", "invalid", "pending", "running"))

    def exit_code(self, allow_contested: bool = False, require_review: bool = False) -> int:
        """0 when clean (contested claims allowed if asked), else 1; with ``require_review``, 3 when the
        batch is otherwise clean but some flagged claim has no review decision yet."""
        bad = any(self.counts.get(s, 0) for s in ("failed", "skipped_budget", "invalid", "pending", "running"))
        if bad or (self.contested and not allow_contested):
            return 1
        return 3 if require_review and self.unreviewed else 0


@dataclass
class BatchProgress:
    """Counters handed to ``on_progress`` after each claim (and once at the start)."""

    total: int
    done: int = 0
    """Claims finished, including those finished by earlier invocations."""
    failed: int = 0
    contested: int = 0
    skipped_budget: int = 0
    degraded: int = 0
    checked: int = 0
    """Claims finished by this invocation."""
    spent_usd: float = 0.0
    """What this invocation spent."""
    started: float = field(default_factory=time.monotonic)
    last: ItemResult | None = None
    waiting: list[Any] = field(default_factory=list)
    """Models this process's calls are waiting on for rate-limit capacity right now
    (``council.calls.ratelimit.Waiting``: model, calls, reason); empty when nothing waits."""

    @property
    def rate(self) -> float:
        """Claims per second finished by this invocation."""
        elapsed = time.monotonic() - self.started
        return self.checked / elapsed if elapsed > 0 else 0.0


def output_format(path: str | os.PathLike[str]) -> Literal["jsonl", "csv"]:
    """The results format for ``path`` by its extension (``-`` is JSONL on stdout)."""
    p = str(path)
    if p == "-":
        return "jsonl"
    suffix = Path(p).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise InputError(f"--out {p}: unknown results format {suffix or '(no extension)'!r}: use .jsonl or .csv")


def write_results(path: str | os.PathLike[str], results: Iterable[ItemResult]) -> None:
    """Write results as JSONL or CSV (by extension), atomically: a crash never leaves half a file."""
    fmt = output_format(path)
    buf = io.StringIO(newline="")
    if fmt == "csv":
        w = csv.DictWriter(buf, fieldnames=OUTPUT_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in results:
            w.writerow({k: ("" if v is None else v) for k, v in r.model_dump(include=set(OUTPUT_FIELDS)).items()})
    else:
        for r in results:
            buf.write(json.dumps(r.model_dump(include=set(OUTPUT_FIELDS)), ensure_ascii=False) + "\n")
    if str(path) == "-":
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(buf.getvalue(), encoding="utf-8", newline="")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"--out {target}: cannot write it ({exc.strerror or exc})") from None


_NO_VERDICT = ("failed", "skipped_budget", "invalid", "pending", "running")


def _from_row(r: Any) -> ItemResult:
    verdict = r.status not in _NO_VERDICT  # rows stored by older versions may carry a label without one
    return ItemResult(
        line=r.line, id=r.claim_id if r.claim_id is not None else r.item_key.removeprefix("sha:"), status=r.status,
        label=r.label if verdict else None, confidence=r.confidence if verdict else None,
        agreement=r.agreement if verdict else None, degraded=r.degraded if verdict else None,
        contested=bool(r.contested), needs_review=bool(r.needs_review), review_reasons=r.review_reasons,
        cost_usd=round((r.prior_cost_usd or 0.0) + (r.cost_usd or 0.0), 10),
        run_id=r.run_id if r.cost_usd is not None else None,
        error=r.error, warnings=getattr(r, "warnings", None), claim=r.claim,
    )


def _bad(b: BadRow) -> ItemResult:
    return ItemResult(line=b.line, id=b.claim_id or "", status="invalid", error=f"line {b.line}: {b.reason}")


class _Runner:
    """The workers of one invocation, their shared counters and the stop conditions."""

    def __init__(self, council: Any, bstore: Any, batch_id: str, owner: str, *, concurrency: int, budget: Any,
                 lease_s: float, progress: BatchProgress, on_progress: Callable[[BatchProgress], None] | None) -> None:
        self.council, self.bstore, self.batch_id, self.owner = council, bstore, batch_id, owner
        self.concurrency, self.budget, self.lease_s = concurrency, budget, lease_s
        self.progress, self.on_progress = progress, on_progress
        self.stop = False
        self.budget_exhausted = False
        self.fatal: BaseException | None = None
        self.spent_before = budget.spent_usd

    def _notify(self) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(self.progress)
            except Exception:  # a broken progress display must not stop the batch
                log.exception("progress callback failed")

    async def run(self) -> None:
        # Compile once before the workers start (it may start local model servers).
        await self.council.prepare()
        # What exists now (modules, litellm, the compiled graph) lives for the whole batch: keep it out of
        # the garbage collector's full passes while the batch runs (they were ~14% of a batch's CPU).
        gc.collect()
        gc.freeze()
        heartbeat = asyncio.create_task(self._heartbeat())
        watcher = asyncio.create_task(self._watch_rate_limits())
        workers: list[asyncio.Task[None]] = []
        try:
            while True:
                workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
                await asyncio.gather(*workers)
                if self.stop or self.budget_exhausted:
                    break
                # Nothing left to take, but another process may still hold claims of this batch: wait for
                # them (taking over any whose owner dies), so the batch is complete when this returns.
                counts = self.bstore.counts(self.batch_id)
                if not counts.get("running") and not counts.get("pending"):
                    break
                await asyncio.sleep(min(1.0, self.lease_s / 4))
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            gc.unfreeze()
            heartbeat.cancel()
            watcher.cancel()
            self.progress.waiting = []
            try:
                self.bstore.release(self.batch_id, self.owner)
            except StoreError:
                pass  # the leases expire on their own
        if self.fatal is not None:
            raise self.fatal

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease_s / 3, 0.05))
            try:
                self.bstore.renew(self.batch_id, self.owner, self.lease_s)
            except StoreError:
                log.warning("could not renew the batch leases", exc_info=True)

    async def _watch_rate_limits(self) -> None:
        """Keep ``progress.waiting`` current, so the progress display shows a batch held by rate limits
        (no claim finishes meanwhile, so the per-claim updates alone would not show it)."""
        while True:
            await asyncio.sleep(_WATCH_S)
            waiting = self.council.limiter.waiting()
            if waiting != self.progress.waiting:
                self.progress.waiting = waiting
                self._notify()

    def _out_of_budget(self) -> bool:
        if self.budget.remaining_usd <= 1e-12:
            self.budget_exhausted = True
        return self.budget_exhausted

    async def _worker(self) -> None:
        while not self.stop and not self._out_of_budget():
            item = self.bstore.lease(self.batch_id, self.owner, self.lease_s)
            if item is None:
                if self.bstore.reclaim(self.batch_id):
                    continue
                return
            try:
                result, values = await self._run_item(item)
            except (ConfigError, StoreError) as exc:  # every claim would fail the same way: stop the batch
                self.fatal = self.fatal or exc
                self.stop = True
                return
            held, cost = self.bstore.finish(self.batch_id, item.key, self.owner, **values)
            if not held:
                log.warning("line %s: the lease was lost to another process; its result is theirs", item.line)
                continue
            self._count(result.model_copy(update={"cost_usd": cost or 0.0}))

    def _count(self, r: ItemResult) -> None:
        p = self.progress
        p.done += 1
        p.checked += 1
        p.failed += r.status == "failed"
        p.degraded += r.status == "degraded"
        p.skipped_budget += r.status == "skipped_budget"
        p.contested += r.contested
        p.spent_usd = self.budget.spent_usd - self.spent_before
        p.last = r
        if r.status == "skipped_budget":
            self.budget_exhausted = True
        self._notify()

    async def _run_item(self, item: Any) -> tuple[ItemResult, dict[str, Any]]:
        from council.deliberation.sources import load_sources
        from council.pipeline.graph import RunRequest

        try:
            sources = load_sources([*item.sources, *([item.context] if item.context else [])])
        except InputError as exc:
            return self._result(item, "invalid", error=str(exc), ran=False)
        request = RunRequest(run_id=item.run_id, task="check", question=item.claim, sources=sources,
                             created_at=datetime.now(UTC), resume=item.resume, tags=item.tags)
        try:
            outcome = await self.council.arun_request(request)
        except (ConfigError, StoreError):
            raise
        except InputError as exc:
            return self._result(item, "invalid", error=str(exc))
        except CouncilError as exc:
            return self._result(item, "failed", error=str(exc))
        except Exception as exc:  # a bug must cost one claim, not the batch
            log.exception("line %s: the council raised", item.line)
            return self._result(item, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
        verdict = outcome.verdict
        fields = dict(label=verdict.label, confidence=verdict.confidence, agreement=verdict.agreement,
                      degraded=verdict.degraded, contested=outcome.contested, needs_review=verdict.needs_human_review,
                      review_reasons="; ".join(f"{r.condition}: {r.detail}" for r in verdict.review_reasons) or None,
                      warnings="; ".join(verdict.warnings()) or None)
        # A claim without a verdict carries no label, confidence or agreement: whatever the vote made of a
        # partial panel is not an answer (the run in the store keeps it for inspection).
        if outcome.out_of_budget:
            return self._result(item, "skipped_budget", error=_BUDGET_OUT, contested=outcome.contested)
        if verdict.decided_by == "none":
            return self._result(item, "failed", error=verdict.answer, contested=outcome.contested)
        if verdict.degraded:
            return self._result(item, "degraded", error="; ".join(verdict.degraded_reasons), **fields)
        return self._result(item, "full", **fields)

    @staticmethod
    def _result(item: Any, status: ItemStatus, *, error: str | None = None, ran: bool = True,
                label: str | None = None, confidence: float | None = None, agreement: float | None = None,
                degraded: bool | None = None, contested: bool = False, needs_review: bool = False,
                review_reasons: str | None = None, warnings: str | None = None) -> tuple[ItemResult, dict[str, Any]]:
        """The result, and the values to store (``run_cost``: the item's cost is its run's total)."""
        values = dict(status=status, label=label, confidence=confidence, agreement=agreement, degraded=degraded,
                      contested=contested, needs_review=needs_review, review_reasons=review_reasons, error=error,
                      warnings=warnings)
        result = ItemResult(line=item.line, id=item.shown_id, run_id=item.run_id if ran else None, claim=item.claim,
                            **values)
        return result, {**values, "run_cost": ran}


def _with_decisions(store: Any, results: list[ItemResult]) -> list[ItemResult]:
    """The results with each run's latest review decision (``council review``)."""
    from council.store.reviews import ReviewStore

    latest = ReviewStore(store).latest(r.run_id for r in results if r.run_id)
    return [r.model_copy(update={"review_label": latest[r.run_id].label}) if r.run_id in latest else r for r in results]


def _check_arguments(claims: Any, config: Any, *, concurrency: int | None, budget_usd: float | None,
                     processes: int, out: str | os.PathLike[str] | None) -> None:
    """Raise ``InputError`` for arguments the batch cannot run with, before anything is read or recorded."""
    if concurrency is not None and concurrency < 1:
        raise InputError("concurrency must be at least 1")
    if budget_usd is not None and budget_usd <= 0:
        raise InputError("the budget must be positive")
    if processes < 1:
        raise InputError("processes must be at least 1")
    paths = isinstance(claims, (str, os.PathLike)) and (config is None or isinstance(config, (str, os.PathLike)))
    if processes > 1 and not paths:
        raise InputError("several processes read the claims and the config from files: pass paths, not objects")
    if out is not None:
        output_format(out)


async def _open_council(config: Any, *, db: str | None, recipe: str | None, rate_limit_share: int) -> tuple[Any, Any]:
    """The council every claim runs on and the budget its calls share (no limit yet: it only measures what
    this invocation spends). Raises when the config cannot serve the batch, before anything is recorded."""
    from council.calls.budget import Budget
    from council.pipeline.engine import Council

    budget = Budget(float("inf"))
    # Each process holds an equal share of the config's concurrent rate limits (a helper is told the count).
    council = Council(config, db=db, budget=budget, recipe=recipe, rate_limit_share=rate_limit_share)
    council.preflight("check")  # a config that cannot serve the batch records nothing
    # An unreachable shared rate-limit storage stops the batch before anything is recorded or sent (the
    # limiter itself is built before the first claim starts).
    from council.calls.ratelimit import check_storage

    await asyncio.to_thread(check_storage, council.config.rate_limits)
    return council, budget


def _open_batch(council: Any, budget: Any, parsed: Any, *, helper: bool, retry_failed: bool) -> Any:
    """Record the batch and its items in the council's store (idempotently) and make its unfinished items
    takeable; the database's standing ceilings govern ``budget``. Returns the batch store."""
    from council.store.queue import BatchStore

    council.store.reliability_ttl_s = 5.0  # thousands of councils need not each re-aggregate every answer
    bstore = BatchStore(council.store)
    _draw_from_ceilings(budget, council.store)
    bstore.register(parsed.batch_id, "check", parsed.source, parsed.items)
    if not helper:  # the invocation that started the helpers prepared the batch for them
        bstore.prepare_rerun(parsed.batch_id, retry_failed)
    bstore.reclaim(parsed.batch_id)
    return bstore


def _share_budget(budget: Any, bstore: Any, bid: str, budget_usd: float | None, *, helper: bool,
                  processes: int) -> tuple[bool, float | None]:
    """Limit ``budget`` to this process's share of what is left of ``budget_usd``: (nothing is left, the
    share each process gets); (False, None) without a budget."""
    if budget_usd is None:
        return False, None
    # What earlier invocations of this batch spent counts against the same budget (a helper is given
    # its share of what was left).
    left = budget_usd if helper else budget_usd - bstore.spent_usd(bid)
    share = left / processes
    budget.limit_usd = max(share, 1e-12)
    return left <= 1e-12, share


async def _run_claims(runner: _Runner, bstore: Any, bid: str, claims: Any, *, config: Any, db: str | None,
                      processes: int, share: float | None, max_claim_chars: int, recipe: str | None,
                      helper: bool) -> None:
    """Run the batch's pending claims here and in ``processes - 1`` helper processes; the claims left when
    the budget ran out end ``skipped_budget``."""
    from .procs import Helpers

    async with Helpers(processes - 1, claims, config=config, db=db, batch_id=bid, concurrency=runner.concurrency,
                       max_claim_chars=max_claim_chars, budget_share=share, runner=runner,
                       rate_limit_share=processes, recipe=recipe):
        await runner.run()
    if processes > 1 and not runner.budget_exhausted and bstore.counts(bid).get("pending"):
        await runner.run()  # claims a helper left (it ran out of its share of the budget, or died)
    if runner.budget_exhausted and not helper:  # the helpers are done: what is left cannot be afforded
        bstore.skip_pending(bid, _NOT_STARTED)


def _report(council: Any, bstore: Any, bid: str, parsed: Any, progress: BatchProgress, runner: _Runner, *,
            budget_usd: float | None, started: float) -> BatchReport:
    """The batch's report, from the stored items plus the input's bad rows."""
    counts = bstore.counts(bid)
    results = _with_decisions(council.store, [_from_row(r) for r in bstore.iter_items(bid)])
    if parsed.bad_rows:
        results = sorted(results + [_bad(b) for b in parsed.bad_rows], key=lambda r: r.line)
    status_counts = {k: v for k, v in counts.items() if k != "contested"}
    if parsed.bad_rows:
        status_counts["invalid"] = status_counts.get("invalid", 0) + len(parsed.bad_rows)
    return BatchReport(
        batch_id=bid, source=parsed.source, database=council.store.safe_url, results=results, counts=status_counts,
        contested=counts.get("contested", 0), checked=progress.checked,
        needs_review=sum(r.needs_review for r in results),
        unreviewed=sum(r.needs_review and r.review_label is None for r in results),
        total_cost_usd=round(sum(r.cost_usd for r in results), 10), spent_usd=round(progress.spent_usd, 10),
        budget_usd=budget_usd, budget_exhausted=runner.budget_exhausted, elapsed_s=time.monotonic() - started,
    )


async def acheck_many(
    claims: str | os.PathLike[str] | Iterable[str | dict[str, Any]],
    *,
    config: Any = None,
    db: str | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    out: str | os.PathLike[str] | None = None,
    batch_id: str | None = None,
    retry_failed: bool = False,
    max_claim_chars: int = DEFAULT_MAX_CLAIM_CHARS,
    lease_s: float = 60.0,
    processes: int = 1,
    on_progress: Callable[[BatchProgress], None] | None = None,
    on_bad_row: Callable[[BadRow], None] | None = None,
    recipe: str | None = None,
    _helper: bool = False,
    _rate_limit_share: int | None = None,
) -> BatchReport:
    """Fact-check every claim of ``claims`` (a .jsonl/.csv path, or an iterable of strings or dicts); see
    the module docstring. Raises ``InputError`` (unreadable input, bad ``out``), ``ConfigError`` or
    ``StoreError`` when the batch cannot run at all; a claim's own failure is a status, never an error.

    ``concurrency``: councils at once, in all processes together; default 8, but 2 on a built-in local
    panel (its members share one llama.cpp server, which answers one request at a time: a second council
    only keeps it busy while the first one's Python work runs; measured in the README, issue 12). ``processes``: more than 1 starts that
    many minus one helper processes (``python -m council.batch``) that take claims from the same database:
    one Python process spends most of its time on CPU, so this is how a batch uses several cores. Each
    process gets an equal share of what is left of the budget (their sum never exceeds it). It needs the
    claims and the config as files. ``on_progress`` is called after each claim (from the event loop: keep
    it quick); ``on_bad_row`` once per skipped row, before any claim runs. ``recipe``: the deliberation
    recipe of every claim (default: the config's).
    """
    from council.store.queue import new_owner

    started = time.monotonic()
    _check_arguments(claims, config, concurrency=concurrency, budget_usd=budget_usd, processes=processes, out=out)
    parsed = read_claims(claims, task="check", max_claim_chars=max_claim_chars, batch_id=batch_id)
    for b in parsed.bad_rows:
        if on_bad_row is not None:
            on_bad_row(b)
    council, budget = await _open_council(config, db=db, recipe=recipe,
                                          rate_limit_share=_rate_limit_share or processes)
    if concurrency is None:
        concurrency = 2 if council.demo else 8
    bstore = _open_batch(council, budget, parsed, helper=_helper, retry_failed=retry_failed)
    bid = parsed.batch_id
    exhausted, share = _share_budget(budget, bstore, bid, budget_usd, helper=_helper, processes=processes)
    counts = bstore.counts(bid)
    progress = BatchProgress(total=sum(v for k, v in counts.items() if k != "contested") + len(parsed.bad_rows),
                             done=sum(counts.get(s, 0) for s in ("full", "degraded", "failed", "invalid"))
                             + len(parsed.bad_rows),
                             started=started)
    runner = _Runner(council, bstore, bid, new_owner(), concurrency=max(1, concurrency // processes), budget=budget,
                     lease_s=lease_s, progress=progress, on_progress=on_progress)
    runner.budget_exhausted = exhausted
    runner._notify()
    if exhausted:
        bstore.skip_pending(bid, _NOT_STARTED)
    elif counts.get("pending", 0) or counts.get("running", 0):  # else nothing to do: no models are needed
        await _run_claims(runner, bstore, bid, claims, config=config, db=db, processes=processes, share=share,
                          max_claim_chars=max_claim_chars, recipe=recipe, helper=_helper)
    report = _report(council, bstore, bid, parsed, progress, runner, budget_usd=budget_usd, started=started)
    if out is not None:
        write_results(out, report.results)
    return report


def _draw_from_ceilings(budget: Any, store: Any) -> None:
    """The database's standing ceilings (``council budget set``) govern this process's calls too."""
    from council.store.ledger import LedgerBudget, ceilings
    from council.store.queue import new_owner

    found = ceilings(store)
    if found:
        budget.parent = LedgerBudget(store, batch_ledger=None, owner=new_owner(), ceilings_=found)


def check_many(claims: Any, **kwargs: Any) -> BatchReport:
    """Sync form of ``acheck_many`` (same arguments)."""
    return run_sync(acheck_many(claims, **kwargs))

