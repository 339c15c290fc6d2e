"""A run's progress as events, read from the store while it runs.

The engine writes every call record, answer, failure, cluster and the verdict the moment it has them, so
following the store shows the run as it happens, whichever process runs it (this service, ``council ask``
or a batch). Each poll compares what is stored with what was already told and yields the news in order:
``run_started``, a ``call`` per finished attempt, ``member_answered``/``member_failed``, ``review``,
``round`` and ``escalation`` for the calls of those stages (recipes that have them), ``clusters``,
``adjudication``, ``verdict`` and, last, ``done`` (or ``error`` when the run failed before it opened).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from council.calls.records import CallRecord
from council.errors import RunNotFound
from council.store.db import Store, StoredRun
from .contracts import RunEvent

__all__ = ["follow_run"]

_STAGE_EVENTS = {"adjudicate": "adjudication", "review": "review", "revise": "round", "round": "round",
                 "escalate": "escalation", "escalation": "escalation"}


def _event_kind(node: str) -> str:
    """The event a finished call of graph node ``node`` is told as (a node of a stage: by its stem)."""
    for stem, kind in _STAGE_EVENTS.items():
        if node == stem or node.startswith(stem):
            return kind
    return "call"


class _Told:
    def __init__(self) -> None:
        self.started = False
        self.calls: set[str] = set()
        self.answers: set[str] = set()
        self.failures: set[str] = set()
        self.clusters = False


def _news(run: StoredRun, told: _Told) -> list[RunEvent]:
    rid = run.run_id
    out: list[RunEvent] = []
    if not told.started:
        told.started = True
        seats = ", ".join(f"{s.get('label')}: {(s.get('chain') or ['?'])[0]}" for s in run.panel)
        out.append(RunEvent(type="run_started", run_id=rid, message=f"{run.task} started with panel {seats}"))
    # One poll can see several steps at once: tell them in the run's order (members' calls, their answers
    # and failures, then the clusters, then the later stages' calls by the time they finished).
    calls = sorted((c for c in run.calls if c.status != "pending" and c.call_id not in told.calls),
                   key=lambda c: c.finished_at)
    for c in (c for c in calls if c.node in ("member", "cluster")):
        out.append(_call_event(rid, c, told))
    for a in run.answers:
        if a.answer_id not in told.answers:
            told.answers.add(a.answer_id)
            out.append(RunEvent(type="member_answered", run_id=rid, member=a.member_label, model=a.model,
                                message=f"member {a.member_label} ({a.model}) answered: {a.answer[:200]}"))
    for f in run.failures:
        if f.member_label not in told.failures:
            told.failures.add(f.member_label)
            out.append(RunEvent(type="member_failed", run_id=rid, member=f.member_label, model=f.model_requested,
                                status=f.error_kind, message=f"member {f.member_label} failed: {f.reason[:200]}"))
    if run.clusters and not told.clusters:
        told.clusters = True
        contested = sum(1 for k in run.clusters if k.status in ("contested", "unresolved") or k.settled_by == "adjudicator")
        out.append(RunEvent(type="clusters", run_id=rid,
                            message=f"{len(run.clusters)} claim clusters, {contested} contested"))
    for c in (c for c in calls if c.node not in ("member", "cluster")):
        out.append(_call_event(rid, c, told))
    return out


def _call_event(rid: str, c: CallRecord, told: _Told) -> RunEvent:
    told.calls.add(c.call_id)
    what = f"{c.node} call of {c.member_label} to {c.model}: {c.status}" + (f" ({c.error_kind})" if c.error_kind else "")
    return RunEvent(type=_event_kind(c.node), run_id=rid, member=c.member_label, model=c.model,  # type: ignore[arg-type]
                    status=c.status, cost_usd=c.cost_usd, message=f"{what}, {c.latency_s:.2f} s, ${c.cost_usd:.6f}")


def _final(run: StoredRun) -> list[RunEvent]:
    rid = run.run_id
    out = []
    v = run.verdict
    if v is not None:
        out.append(RunEvent(type="verdict", run_id=rid, verdict=v, status=run.status, cost_usd=run.total_cost_usd,
                            message=f"verdict: {(v.label + ': ') if v.label else ''}{v.answer[:300]} "
                                    f"(confidence {v.confidence:.2f}{', DEGRADED' if v.degraded else ''})"))
    out.append(RunEvent(type="done", run_id=rid, status=run.status, cost_usd=run.total_cost_usd,
                        message=f"run {run.status}, total cost ${run.total_cost_usd:.6f}"))
    return out


async def follow_run(store: Store, run_id: str, poll_s: float, error_of: Callable[[str], str | None],
                     starting: Callable[[str], bool], wait_s: float = 60.0) -> AsyncIterator[RunEvent]:
    """Yield the run's events until it ends. ``error_of(run_id)``: why a run started here failed, if it did
    (a run that fails while planning never reaches the store); ``starting(run_id)``: the run was started
    here and may not be in the store yet (waited for up to ``wait_s``); any other unknown id is an error."""
    told = _Told()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            run = await asyncio.to_thread(store.load_run, run_id)
        except RunNotFound:
            err = error_of(run_id)
            if err is not None or not starting(run_id) or loop.time() > deadline:
                yield RunEvent(type="error", run_id=run_id, message=err or "no such run")
                return
            await asyncio.sleep(poll_s)
            continue
        for event in _news(run, told):
            yield event
        if run.status != "running":
            err = error_of(run_id)
            if err is not None and run.verdict is None:
                yield RunEvent(type="error", run_id=run_id, message=err)
            for event in _final(run):
                yield event
            return
        await asyncio.sleep(poll_s)
