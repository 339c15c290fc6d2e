"""Reads the service makes of the store: filtered run lists, a run's detail and costs, batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import PurePath

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from council.calls.records import CallRecord
from council.errors import StoreError
from council.store.db import Store, StoredRun
from council.store.queue import FINAL_STATUSES, BatchStore
from council.store.tables import BatchItemRow, BatchRow, ClusterRow, RunRow as RunTable
from .contracts import BatchDetail, BatchItemOut, BatchSummary, CostBreakdown, CostLine, RunDetail, RunList, RunRow

__all__ = ["RunFilters", "batch_detail", "list_batches", "list_runs", "run_costs", "run_detail"]


class RunFilters:
    """Filters of the runs list; each None means any."""

    def __init__(self, *, status: str | None = None, contested: bool | None = None, task: str | None = None,
                 min_cost: float | None = None, max_cost: float | None = None, since: datetime | str | None = None,
                 until: datetime | str | None = None, text: str | None = None) -> None:
        """``since``/``until``: a datetime, an ISO date or time, or an age (``7d``); InputError when unreadable."""
        from council.store.windows import parse_when

        self.status, self.contested, self.task = status, contested, task
        self.min_cost, self.max_cost, self.text = min_cost, max_cost, text
        self.since, self.until = parse_when(since), parse_when(until)


def _contested_clause() -> object:
    k = ClusterRow.__table__.c  # type: ignore[attr-defined]
    r = RunTable.__table__.c  # type: ignore[attr-defined]
    return exists().where(and_(k.run_id == r.run_id, or_(k.settled_by == "adjudicator", k.status.in_(
        ("contested", "unresolved")))))


def list_runs(store: Store, f: RunFilters, limit: int = 50, offset: int = 0) -> RunList:
    """Runs matching ``f``, newest first."""
    r = RunTable.__table__.c  # type: ignore[attr-defined]
    contested = _contested_clause()
    where = []
    if f.status:
        where.append(r.status == f.status)
    if f.task:
        where.append(r.task == f.task)
    if f.contested is not None:
        where.append(contested if f.contested else ~contested)  # type: ignore[operator]
    if f.min_cost is not None:
        where.append(r.total_cost_usd >= f.min_cost)
    if f.max_cost is not None:
        where.append(r.total_cost_usd <= f.max_cost)
    if f.since is not None:
        where.append(r.created_at >= f.since)
    if f.until is not None:
        where.append(r.created_at < f.until)
    if f.text:
        where.append(r.question.contains(f.text, autoescape=True))
    cols = [r.run_id, r.created_at, r.finished_at, r.task, r.question, r.recipe, r.status, r.verdict_label,
            r.verdict_answer, r.degraded, r.total_cost_usd, contested.label("contested")]  # type: ignore[attr-defined]
    try:
        with store.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(RunTable.__table__).where(*where)).scalar_one()
            rows = conn.execute(select(*cols).where(*where).order_by(r.created_at.desc()).limit(limit).offset(offset)).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the runs: {type(exc).__name__}") from exc
    return RunList(total=int(total), limit=limit, offset=offset, runs=[RunRow(
        run_id=x.run_id, created_at=x.created_at, finished_at=x.finished_at, task=x.task, question=x.question,
        recipe=x.recipe, status=x.status, verdict=x.verdict_label or x.verdict_answer, degraded=x.degraded,
        contested=bool(x.contested), total_cost_usd=x.total_cost_usd) for x in rows])


def run_detail(run: StoredRun) -> RunDetail:
    """A stored run as the API returns it (catalog entries are left out: they name env vars and paths)."""
    return RunDetail(
        run_id=run.run_id, task=run.task, question=run.question, recipe=run.recipe, created_at=run.created_at,
        finished_at=run.finished_at, status=run.status, member_policy=run.member_policy.ref,
        adjudication_policy=run.adjudication_policy.ref, panel=run.panel, verdict=run.verdict, answers=run.answers,
        failures=run.failures, claims=[c for a in run.answers for c in a.claims], clusters=run.clusters,
        passages=run.passages, calls=run.calls, total_cost_usd=run.total_cost_usd,
    )


def _lines(calls: list[CallRecord], key: Callable[[CallRecord], str]) -> list[CostLine]:
    groups: dict[str, list[CallRecord]] = defaultdict(list)
    for c in calls:
        groups[key(c)].append(c)
    return [CostLine(key=k, calls=len(v), prompt_tokens=sum(c.prompt_tokens for c in v),
                     completion_tokens=sum(c.completion_tokens for c in v), cost_usd=sum(c.cost_usd for c in v),
                     latency_s=sum(c.latency_s for c in v)) for k, v in sorted(groups.items())]


def run_costs(run: StoredRun) -> CostBreakdown:
    """The run's spend by member, model and node; the total is the sum of its call records."""
    calls = run.calls
    return CostBreakdown(
        run_id=run.run_id, total_cost_usd=sum(c.cost_usd for c in calls), calls=len(calls),
        prompt_tokens=sum(c.prompt_tokens for c in calls), completion_tokens=sum(c.completion_tokens for c in calls),
        by_member=_lines(calls, lambda c: c.member_label), by_model=_lines(calls, lambda c: c.model),
        by_node=_lines(calls, lambda c: c.node),
    )


def _summary(bstore: BatchStore, b: BatchRow) -> BatchSummary:
    counts = bstore.counts(b.batch_id)
    total = sum(v for k, v in counts.items() if k != "contested")
    return BatchSummary(batch_id=b.batch_id, task=b.task, source=PurePath(b.source).name, created_at=b.created_at,
                        total=total, counts=counts, done=sum(counts.get(s, 0) for s in FINAL_STATUSES),
                        spent_usd=bstore.spent_usd(b.batch_id))


def list_batches(store: Store, limit: int = 50) -> list[BatchSummary]:
    """Batches, newest first, with their progress."""
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(BatchRow).order_by(BatchRow.created_at.desc()).limit(limit)).all()  # type: ignore[attr-defined]
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the batches: {type(exc).__name__}") from exc
    bstore = BatchStore(store)
    return [_summary(bstore, BatchRow(**r._mapping)) for r in rows]


def batch_detail(store: Store, batch_id: str, limit: int = 200, offset: int = 0) -> BatchDetail | None:
    """One batch and a page of its items (None when there is no such batch)."""
    t = BatchItemRow.__table__.c  # type: ignore[attr-defined]
    try:
        with store.engine.connect() as conn:
            row = conn.execute(select(BatchRow).where(BatchRow.batch_id == batch_id)).first()  # type: ignore[arg-type]
            items = conn.execute(select(BatchItemRow.__table__).where(t.batch_id == batch_id).order_by(t.line)  # type: ignore[attr-defined]
                                 .limit(limit).offset(offset)).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the batch: {type(exc).__name__}") from exc
    if row is None:
        return None
    summary = _summary(BatchStore(store), BatchRow(**row._mapping))
    return BatchDetail(**summary.model_dump(), items=[BatchItemOut(
        line=i.line, claim=i.claim, status=i.status, label=i.label, confidence=i.confidence, contested=i.contested,
        cost_usd=None if i.cost_usd is None else (i.prior_cost_usd or 0.0) + i.cost_usd, run_id=i.run_id,
        error=i.error) for i in items])
