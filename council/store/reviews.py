"""Human review in the store: the review queue (flagged verdicts), and the decisions people record.

Tables (migration ``0005_human_review``): ``review_flags`` (one row per review condition that fired for
a run's verdict, written with the verdict), ``review_decisions`` (one row per decision, never rewritten:
a second decision on a run is a new row that becomes the run's ``latest``; the earlier one stays as
history) and ``run_tags`` (a run's item tags, which the queue filters on). The council's own verdict in
``verdicts`` is never touched by a decision: both stay, side by side.

A run is *in the queue* while it has flags and no decision. A decision on a run that was not flagged is
refused unless forced, and is then recorded as unsolicited (``solicited = False``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from council.deliberation.flags import REVIEW_CONDITIONS, ReviewReason
from council.errors import InputError, StoreError
from .tables import BatchItemRow, ReviewDecisionRow, ReviewFlagRow, RunRow, RunTagRow, VerdictRow

__all__ = ["REVIEW_LABELS", "QueueItem", "ReviewDecision", "ReviewFilter", "ReviewStore", "flag_rows", "parse_tags"]

REVIEW_LABELS: dict[str, tuple[str, ...]] = {
    "check": ("SUPPORTED", "REFUTED", "NOT_ENOUGH_INFO"),
    "ask": ("ACCEPTED", "REJECTED"),
}
"""What a reviewer may decide, per task: a fact check's true label; for a question, whether the council's
answer is right (ACCEPTED) or not (REJECTED)."""


class ReviewDecision(BaseModel):
    """A person's decision on a council verdict."""

    decision_id: str
    run_id: str
    reviewer: str
    """Who decided (``--reviewer`` or ``COUNCIL_REVIEWER``)."""
    decided_at: datetime
    label: str
    """The reviewer's label (see ``REVIEW_LABELS``)."""
    note: str = ""
    council_label: str | None = None
    """The council's label that this decision confirms or overturns (fact checks)."""
    council_answer: str
    verdict_id: str
    """The council verdict decided on (it is never overwritten)."""
    solicited: bool
    """The run was flagged for review; False for an unsolicited review (``--force``)."""
    latest: bool
    """The run's current decision; earlier ones are history."""
    supersedes: str | None = None
    """The decision this one replaced, if any."""

    @property
    def overturns(self) -> bool:
        """The reviewer disagrees with the council."""
        if self.council_label is not None:
            return self.label != self.council_label
        return self.label == "REJECTED"


class QueueItem(BaseModel):
    """One flagged run, as the review queue lists it."""

    run_id: str
    flagged_at: datetime
    task: str
    question: str
    policy: str
    """``name@version`` of the members' policy (whose review conditions fired)."""
    council_label: str | None
    council_answer: str | None
    confidence: float | None
    reasons: list[ReviewReason]
    tags: dict[str, str] = Field(default_factory=dict)
    batch_id: str | None = None
    line: int | None = None
    """The run's line in its batch file."""
    item_id: str | None = None
    """The batch row's id (or content hash)."""
    decision: ReviewDecision | None = None
    """The latest decision, when decided runs are listed too."""


class ReviewFilter(BaseModel):
    """Which flagged runs to list."""

    batch_id: str | None = None
    policy: str | None = None
    """A policy name (any version) or ``name@version``."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Every one of these tags must be on the run."""
    condition: str | None = None
    """Only runs for which this condition fired."""
    include_decided: bool = False
    """List runs that already have a decision too."""
    limit: int | None = None


def parse_tags(values: Iterable[str]) -> dict[str, str]:
    """``["risk=high", "team=a"]`` -> ``{"risk": "high", "team": "a"}``; a malformed one is an InputError."""
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"tag {v!r} must be KEY=VALUE, e.g. risk=high")
        out[key.strip()] = value.strip()
    return out


def flag_rows(run_id: str, reasons: list[ReviewReason], at: datetime) -> list[dict[str, Any]]:
    """The ``review_flags`` rows of a verdict's review reasons."""
    return [{"run_id": run_id, "condition": r.condition, "detail": r.detail, "flagged_at": at} for r in reasons]


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


class ReviewStore:
    """Review queue and decisions over a ``Store``'s engine (same database as the runs)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.engine = store.engine
        self.flags = ReviewFlagRow.__table__  # type: ignore[attr-defined]
        self.decisions_t = ReviewDecisionRow.__table__  # type: ignore[attr-defined]

    def _fail(self, exc: SQLAlchemyError) -> StoreError:
        return StoreError(f"review bookkeeping failed on {self.store.safe_url}: {type(exc).__name__}: "
                          f"{exc.args[0] if exc.args else ''}")

    # decisions ------------------------------------------------------------------------------------
    def decide(self, run_id: str, label: str, *, reviewer: str, note: str = "", force: bool = False,
               at: datetime | None = None) -> ReviewDecision:
        """Record a decision on a run's verdict (``run_id`` may be a unique prefix) and return it.

        Raises ``RunNotFound`` for an unknown run, ``InputError`` for a run without a verdict, a label
        outside the task's labels, an empty reviewer, or a run that was not flagged (unless ``force``)."""
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise InputError("no reviewer: pass --reviewer NAME or set COUNCIL_REVIEWER")
        run_id = self.store.resolve_run_id(run_id.strip())
        runs, verdicts, d = RunRow.__table__, VerdictRow.__table__, self.decisions_t  # type: ignore[attr-defined]
        try:
            with self.engine.begin() as conn:
                # Lock the run so two decisions at once cannot both become the latest (PostgreSQL).
                run = conn.execute(select(runs).where(runs.c.run_id == run_id).with_for_update()).first()
                assert run is not None
                verdict = conn.execute(select(verdicts.c.verdict_id, verdicts.c.body_json)
                                       .where(verdicts.c.run_id == run_id)).first()
                if verdict is None:
                    raise InputError(f"run {run_id} has no verdict to review (status {run.status})")
                labels = REVIEW_LABELS.get(run.task, ())
                label = (label or "").strip().upper()
                if label not in labels:
                    raise InputError(f"label {label or '(empty)'!r} is not a label of a "
                                     f"{'fact check' if run.task == 'check' else 'question'}: use {', '.join(labels)}")
                flagged = conn.execute(select(exists().where(self.flags.c.run_id == run_id))).scalar()
                if not flagged and not force:
                    raise InputError(f"run {run_id} was not flagged for review: pass --force to record an "
                                     "unsolicited review")
                previous = conn.execute(select(d.c.decision_id).where(d.c.run_id == run_id, d.c.latest.is_(True))).scalar()
                conn.execute(update(d).where(d.c.run_id == run_id).values(latest=False))
                body = json.loads(verdict.body_json)
                decision = ReviewDecision(
                    decision_id=uuid.uuid4().hex, run_id=run_id, reviewer=reviewer, decided_at=at or _now(),
                    label=label, note=note.strip(), council_label=body.get("label"),
                    council_answer=body.get("answer", ""), verdict_id=verdict.verdict_id, solicited=bool(flagged),
                    latest=True, supersedes=previous,
                )
                conn.execute(d.insert(), [decision.model_dump()])
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        self.store.__dict__.pop("_reliability_cache", None)  # the decision is feedback for the reliabilities
        return decision

    def decisions(self, run_id: str) -> list[ReviewDecision]:
        """Every decision on a run, oldest first (the last one is the latest)."""
        d = self.decisions_t
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(d).where(d.c.run_id == run_id).order_by(d.c.decided_at, d.c.latest)).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return [self._decision(r) for r in rows]

    @staticmethod
    def _decision(r: Any) -> ReviewDecision:
        values = dict(r._mapping)
        values["decided_at"] = _aware(values["decided_at"])
        return ReviewDecision.model_validate(values)

    def latest(self, run_ids: Iterable[str]) -> dict[str, ReviewDecision]:
        """Each given run's latest decision (runs without one are left out)."""
        d, ids, out = self.decisions_t, list(run_ids), {}
        try:
            with self.engine.connect() as conn:
                for i in range(0, len(ids), 500):
                    for r in conn.execute(select(d).where(d.c.run_id.in_(ids[i:i + 500]), d.c.latest.is_(True))):
                        out[r.run_id] = self._decision(r)
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return out

    def reasons(self, run_id: str) -> tuple[datetime | None, list[ReviewReason]]:
        """When the run was flagged, and why (None and [] when it was not)."""
        f = self.flags
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(f).where(f.c.run_id == run_id)).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        rows = sorted(rows, key=lambda r: REVIEW_CONDITIONS.index(r.condition) if r.condition in REVIEW_CONDITIONS else 99)
        at = min((_aware(r.flagged_at) for r in rows), default=None)
        return at, [ReviewReason(condition=r.condition, detail=r.detail) for r in rows]

    # the queue ------------------------------------------------------------------------------------
    def queue(self, flt: ReviewFilter | None = None) -> list[QueueItem]:
        """Flagged runs, oldest flag first; undecided only unless ``include_decided``."""
        flt = flt or ReviewFilter()
        if flt.condition is not None and flt.condition not in REVIEW_CONDITIONS:
            raise InputError(f"unknown review condition {flt.condition!r}: use {', '.join(REVIEW_CONDITIONS)}")
        f, d = self.flags, self.decisions_t
        runs, tags, items = RunRow.__table__, RunTagRow.__table__, BatchItemRow.__table__  # type: ignore[attr-defined]
        first = select(f.c.run_id, func.min(f.c.flagged_at).label("flagged_at")).group_by(f.c.run_id).subquery()
        stmt = (select(first.c.run_id, first.c.flagged_at, runs.c.task, runs.c.question, runs.c.member_policy,
                       runs.c.verdict_label, runs.c.verdict_answer)
                .join(runs, runs.c.run_id == first.c.run_id))
        if not flt.include_decided:
            stmt = stmt.where(~exists().where(d.c.run_id == first.c.run_id))
        if flt.batch_id is not None:
            stmt = stmt.where(first.c.run_id.in_(select(items.c.run_id).where(items.c.batch_id == flt.batch_id)))
        if flt.policy is not None:
            stmt = stmt.where(or_(runs.c.member_policy == flt.policy,
                                  runs.c.member_policy.startswith(flt.policy + "@", autoescape=True)))
        for key, value in flt.tags.items():
            stmt = stmt.where(exists().where(tags.c.run_id == first.c.run_id, tags.c.key == key, tags.c.value == value))
        if flt.condition is not None:
            stmt = stmt.where(exists().where(f.c.run_id == first.c.run_id, f.c.condition == flt.condition))
        stmt = stmt.order_by(first.c.flagged_at, first.c.run_id)
        if flt.limit is not None:
            stmt = stmt.limit(flt.limit)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
                return self._items(conn, rows)
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

    def _items(self, conn: Any, rows: list[Any]) -> list[QueueItem]:
        ids = [r.run_id for r in rows]
        f, tags, items = self.flags, RunTagRow.__table__, BatchItemRow.__table__  # type: ignore[attr-defined]
        verdicts = VerdictRow.__table__  # type: ignore[attr-defined]
        reasons: dict[str, list[ReviewReason]] = {}
        tag_map: dict[str, dict[str, str]] = {}
        batch: dict[str, Any] = {}
        confidence: dict[str, float] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for r in conn.execute(select(f).where(f.c.run_id.in_(chunk))):
                reasons.setdefault(r.run_id, []).append(ReviewReason(condition=r.condition, detail=r.detail))
            for r in conn.execute(select(tags).where(tags.c.run_id.in_(chunk))):
                tag_map.setdefault(r.run_id, {})[r.key] = r.value
            for r in conn.execute(select(items.c.run_id, items.c.batch_id, items.c.line, items.c.claim_id,
                                         items.c.item_key).where(items.c.run_id.in_(chunk))):
                batch[r.run_id] = r
            for r in conn.execute(select(verdicts.c.run_id, verdicts.c.body_json).where(verdicts.c.run_id.in_(chunk))):
                confidence[r.run_id] = json.loads(r.body_json).get("confidence")
        latest = self.latest(ids)
        order = {c: i for i, c in enumerate(REVIEW_CONDITIONS)}
        out = []
        for r in rows:
            b = batch.get(r.run_id)
            out.append(QueueItem(
                run_id=r.run_id, flagged_at=_aware(r.flagged_at), task=r.task, question=r.question,
                policy=r.member_policy, council_label=r.verdict_label, council_answer=r.verdict_answer,
                confidence=confidence.get(r.run_id),
                reasons=sorted(reasons.get(r.run_id, []), key=lambda x: order.get(x.condition, 99)),
                tags=tag_map.get(r.run_id, {}), batch_id=b.batch_id if b else None, line=b.line if b else None,
                item_id=(b.claim_id if b.claim_id is not None else b.item_key.removeprefix("sha:")) if b else None,
                decision=latest.get(r.run_id),
            ))
        return out

    # monitoring -----------------------------------------------------------------------------------
    def policy_rows(self, since: datetime | None = None, until: datetime | None = None) -> list[Any]:
        """One row per finished run with a verdict in [since, until): run id, task, member policy, the
        council's label, when it was flagged (None: not flagged)."""
        runs, verdicts, f = RunRow.__table__, VerdictRow.__table__, self.flags  # type: ignore[attr-defined]
        flagged = select(f.c.run_id, func.min(f.c.flagged_at).label("flagged_at")).group_by(f.c.run_id).subquery()
        stmt = (select(runs.c.run_id, runs.c.task, runs.c.member_policy, runs.c.verdict_label, flagged.c.flagged_at)
                .join(verdicts, verdicts.c.run_id == runs.c.run_id)
                .outerjoin(flagged, flagged.c.run_id == runs.c.run_id))
        if since is not None:
            stmt = stmt.where(runs.c.created_at >= since)
        if until is not None:
            stmt = stmt.where(runs.c.created_at < until)
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(stmt.order_by(runs.c.created_at)).all())
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

    def all_decisions(self, run_ids: Iterable[str]) -> dict[str, list[ReviewDecision]]:
        """Every decision of the given runs, oldest first per run."""
        d, ids, out = self.decisions_t, list(run_ids), {}
        try:
            with self.engine.connect() as conn:
                for i in range(0, len(ids), 500):
                    for r in conn.execute(select(d).where(d.c.run_id.in_(ids[i:i + 500])).order_by(d.c.decided_at)):
                        out.setdefault(r.run_id, []).append(self._decision(r))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return out
