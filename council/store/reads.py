"""The read side of the store: the read models (``RunSummary``, one line of ``council runs``; ``StoredRun``,
everything stored of one run) and the functions that load them. ``Store`` delegates its ``resolve_run_id``,
``list_runs`` and ``load_run`` here; use those methods."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlmodel import col, select

from council.calls.answers import Claim, MemberAnswer, MemberFailure
from council.calls.records import CallRecord
from council.config.catalog import ModelEntry
from council.config.policy import TaskPolicy
from council.deliberation.cascade import Escalation
from council.deliberation.clusters import ClaimCluster
from council.deliberation.review import Review
from council.deliberation.sources import Passage, Source
from council.deliberation.verdict import Verdict
from council.errors import RunNotFound, StoreError
from .deliberation import load_escalations, load_reviews
from .mapping import answer_from_row, call_from_row, claim_from_row, failure_from_row
from .reviews import ReviewDecision, ReviewStore
from .tables import (
    AnswerRow,
    CallRow,
    ClaimRow,
    ClusterRow,
    FailureRow,
    FeedbackRow,
    PassageRow,
    PolicyRow,
    RunModelRow,
    RunRow,
    RunTagRow,
    SourceRow,
    VerdictRow,
)

if TYPE_CHECKING:
    from .db import Store

__all__ = ["RunSummary", "StoredRun", "list_runs", "load_run", "resolve_run_id"]


class RunSummary(BaseModel):
    """One line of ``council runs``."""

    run_id: str
    created_at: datetime
    task: str
    question: str
    status: str
    verdict: str | None
    degraded: bool | None
    total_cost_usd: float


class StoredRun(BaseModel):
    """Everything stored of one run: what the provenance graph and ``council show`` are built from."""

    run_id: str
    created_at: datetime
    finished_at: datetime | None
    task: str
    question: str
    status: str
    recipe: str
    member_policy: TaskPolicy
    adjudication_policy: TaskPolicy
    panel: list[dict[str, Any]]
    models: list[ModelEntry]
    calls: list[CallRecord]
    answers: list[MemberAnswer]
    """The members' answers in force: for a recipe with revision rounds, each member's latest."""
    revised_answers: list[MemberAnswer] = []
    """Answers a later revision round replaced (``revised_from`` of their successor), oldest round first."""
    failures: list[MemberFailure]
    verdict: Verdict | None
    total_cost_usd: float
    clusters: list[ClaimCluster] = []
    sources: list[Source] = []
    """The run's source documents (text is kept in their passages, not repeated here)."""
    passages: list[Passage] = []
    feedback_label: str | None = None
    """A human's ground-truth label, if one was given with ``council feedback``."""
    reviews: list[Review] = []
    """Peer reviews of a recipe with a ``review`` stage."""
    escalations: list[Escalation] = []
    """Escalations of a recipe with an ``escalate`` stage."""
    tags: dict[str, str] = {}
    """The run's item tags (a batch row's ``tags``, ``--tag`` on ``council check-one``)."""
    flagged_at: datetime | None = None
    """When the verdict was flagged for human review (None: it was not)."""
    decisions: list[ReviewDecision] = []
    """People's decisions on the verdict, oldest first; the last is the one in force (``council review``)."""

    @property
    def decision(self) -> ReviewDecision | None:
        """The decision in force, if any."""
        return next((d for d in self.decisions if d.latest), None)

def resolve_run_id(store: Store, prefix: str) -> str:
    """The full id of the one run whose id starts with ``prefix``."""
    with store.session() as s:
        ids = list(s.exec(select(RunRow.run_id).where(col(RunRow.run_id).startswith(prefix, autoescape=True)).limit(2)))
    if not ids:
        raise RunNotFound(f"no run with id {prefix!r} in {store.safe_url}")
    if len(ids) > 1:
        raise RunNotFound(f"run id {prefix!r} is ambiguous: give more characters")
    return ids[0]


def list_runs(store: Store, limit: int = 20) -> list[RunSummary]:
    with store.session() as s:
        rows = s.exec(select(RunRow).order_by(col(RunRow.created_at).desc()).limit(limit)).all()
    return [
        RunSummary(
            run_id=r.run_id, created_at=r.created_at, task=r.task, question=r.question, status=r.status,
            verdict=r.verdict_label or r.verdict_answer, degraded=r.degraded, total_cost_usd=r.total_cost_usd,
        )
        for r in rows
    ]


def load_run(store: Store, run_id: str) -> StoredRun:
    """Everything stored of a run (``run_id`` may be a unique prefix)."""
    run_id = store.resolve_run_id(run_id)
    with store.session() as s:
        run = s.get(RunRow, run_id)
        assert run is not None
        mp = s.get(PolicyRow, run.member_policy)
        ap = s.get(PolicyRow, run.adjudication_policy)
        models = s.exec(select(RunModelRow).where(RunModelRow.run_id == run_id)).all()
        calls = s.exec(select(CallRow).where(CallRow.run_id == run_id).order_by(CallRow.started_at)).all()
        answers = s.exec(select(AnswerRow).where(AnswerRow.run_id == run_id).order_by(AnswerRow.member_label)).all()
        claims = s.exec(select(ClaimRow).where(ClaimRow.run_id == run_id).order_by(ClaimRow.position)).all()
        failures = s.exec(select(FailureRow).where(FailureRow.run_id == run_id).order_by(FailureRow.member_label)).all()
        verdict = s.exec(select(VerdictRow).where(VerdictRow.run_id == run_id)).first()
        clusters = s.exec(select(ClusterRow).where(ClusterRow.run_id == run_id).order_by(ClusterRow.label)).all()
        sources = s.exec(select(SourceRow).where(SourceRow.run_id == run_id)).all()
        passages = s.exec(select(PassageRow).where(PassageRow.run_id == run_id)).all()
        feedback = s.get(FeedbackRow, run_id)
        tags = s.exec(select(RunTagRow).where(RunTagRow.run_id == run_id)).all()
    reviews = ReviewStore(store)
    flagged_at, _ = reviews.reasons(run_id)
    if mp is None or ap is None:
        raise StoreError(f"run {run_id} refers to a policy missing from the store")
    by_answer: dict[str, list[Claim]] = {}
    for c in claims:
        by_answer.setdefault(c.answer_id, []).append(claim_from_row(c))
    return StoredRun(
        run_id=run.run_id, created_at=run.created_at, finished_at=run.finished_at, task=run.task,
        question=run.question, status=run.status, recipe=run.recipe,
        member_policy=TaskPolicy.model_validate_json(mp.body_json),
        adjudication_policy=TaskPolicy.model_validate_json(ap.body_json),
        panel=json.loads(run.panel_json),
        models=[ModelEntry.model_validate_json(m.body_json) for m in models],
        calls=[call_from_row(c) for c in calls],
        answers=[answer_from_row(a, by_answer.get(a.answer_id, [])) for a in answers if a.superseded_by is None],
        revised_answers=sorted((answer_from_row(a, by_answer.get(a.answer_id, [])) for a in answers
                                if a.superseded_by is not None), key=lambda a: (a.round, a.member_label)),
        failures=[failure_from_row(f) for f in failures],
        verdict=Verdict.model_validate_json(verdict.body_json) if verdict else None,
        total_cost_usd=run.total_cost_usd,
        clusters=sorted((ClaimCluster.model_validate_json(k.body_json) for k in clusters), key=lambda k: int(k.label[1:])),
        sources=[Source(source_id=x.source_id, title=x.title, text="") for x in sources],
        passages=sorted((Passage(passage_id=p.passage_id, source_id=p.source_id, position=p.position, key=p.key,
                                 text=p.text) for p in passages), key=lambda p: int(p.passage_id[1:])),
        feedback_label=feedback.label if feedback else None,
        reviews=load_reviews(store, run_id), escalations=load_escalations(store, run_id),
        tags={t.key: t.value for t in tags}, flagged_at=flagged_at, decisions=reviews.decisions(run_id),
    )
