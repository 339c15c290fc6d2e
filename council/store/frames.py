"""Records as pandas DataFrames, for notebooks: a run's claims, call records, and the runs of a store.

These back ``RunResult.claims_frame()``, ``RunResult.calls_frame()``, ``Store.runs_frame()`` and
``Store.calls_frame()``. pandas is an optional dependency (``pip install 'council[notebooks]'``) and is
imported inside each function, never when council is imported. Times are UTC timestamps (the store keeps
naive UTC); column names are stable, so a notebook cell can select them by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from council.errors import CouncilError
from council.calls.records import CallRecord

if TYPE_CHECKING:
    import pandas as pd

    from council.pipeline.engine import RunResult
    from .db import RunRow

__all__ = ["CALL_COLUMNS", "CLAIM_COLUMNS", "RUN_COLUMNS", "calls_frame", "claims_frame", "runs_frame"]

CLAIM_COLUMNS = [
    "claim_id", "member", "model", "text", "confidence", "verdict", "cluster", "cluster_status", "settled_by",
    "evidence", "citations", "verified", "answer_id",
]

CALL_COLUMNS = [
    "run_id", "call_id", "node", "member", "attempt", "model_requested", "model", "fallback", "provider",
    "status", "error_kind", "prompt_tokens", "completion_tokens", "cost_usd", "cost_source", "latency_s",
    "queued_s", "policy", "request_id", "started_at", "finished_at",
]

RUN_COLUMNS = [
    "run_id", "created_at", "finished_at", "duration_s", "task", "question", "status", "verdict", "degraded",
    "total_cost_usd",
]


_MARK: dict[bool | None, str] = {True: " ✓", False: " ✗", None: ""}


def require_pandas() -> Any:
    try:
        import pandas
    except ModuleNotFoundError:
        raise CouncilError("tables need pandas: pip install 'council[notebooks]'") from None
    return pandas


def claims_frame(result: RunResult) -> pd.DataFrame:
    """Who said what in a run: one row per claim, with its member, model, confidence, how the verdict
    used it (``supports``, ``contradicts`` or empty), its cluster (``K1``...) and that cluster's status,
    and its evidence (``S1 ✓`` verified, ``S1 ✗`` not verified, plain ``S1`` when no sources were given).
    ``verified`` is True when every citation was verified, False when any was not, None without any."""
    pd = require_pandas()
    v = result.verdict
    support, against = set(v.support if v else []), set(v.contradicted if v else [])
    cluster_of = {cid: k for k in result.clusters for cid in k.claim_ids}
    rows = []
    for c in result.claims:
        k = cluster_of.get(c.claim_id)
        marks = [x.verified for x in c.citations]
        rows.append({
            "claim_id": c.claim_id, "member": c.member_label, "model": c.model, "text": c.text,
            "confidence": c.confidence,
            "verdict": "supports" if c.claim_id in support else ("contradicts" if c.claim_id in against else ""),
            "cluster": k.label if k else None, "cluster_status": k.status if k else None,
            "settled_by": k.settled_by if k else None,
            "evidence": ", ".join(x.source_id + _MARK[x.verified] for x in c.citations),
            "citations": len(c.citations),
            "verified": None if not marks or any(m is None for m in marks) else all(marks),
            "answer_id": c.answer_id,
        })
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def calls_frame(calls: Iterable[CallRecord]) -> pd.DataFrame:
    """Call records (billing records) as a DataFrame: one row per attempt; ``fallback`` is True when the
    attempt went to a model other than the seat's first choice; ``policy`` is ``name@version``."""
    pd = require_pandas()
    rows = [
        {
            "run_id": c.run_id, "call_id": c.call_id, "node": c.node, "member": c.member_label, "attempt": c.attempt,
            "model_requested": c.model_requested, "model": c.model, "fallback": c.model != c.model_requested,
            "provider": c.provider, "status": c.status, "error_kind": c.error_kind, "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens, "cost_usd": c.cost_usd, "cost_source": c.cost_source,
            "latency_s": c.latency_s, "queued_s": c.queued_s, "policy": f"{c.policy_name}@{c.policy_version}", "request_id": c.request_id,
            "started_at": c.started_at, "finished_at": c.finished_at,
        }
        for c in calls
    ]
    frame = pd.DataFrame(rows, columns=CALL_COLUMNS)
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def runs_frame(runs: Iterable[RunRow]) -> pd.DataFrame:
    """Runs as a DataFrame, one row per run, oldest first as given; ``verdict`` is the fact-check label or
    the answer; ``duration_s`` is None for a run that never finished."""
    pd = require_pandas()
    rows = [
        {
            "run_id": r.run_id, "created_at": r.created_at, "finished_at": r.finished_at,
            "duration_s": (r.finished_at - r.created_at).total_seconds() if r.finished_at else None,
            "task": r.task, "question": r.question, "status": r.status,
            "verdict": r.verdict_label or r.verdict_answer, "degraded": r.degraded, "total_cost_usd": r.total_cost_usd,
        }
        for r in runs
    ]
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for column in ("created_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
