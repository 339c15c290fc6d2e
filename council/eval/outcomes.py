"""Reading an arm's outcome on one golden item out of a stored run.

The shared panel run gives several arms at once: ``council`` is its verdict, ``majority`` the plain
majority of its member answers, ``single:MODEL`` the answer of the seat whose first choice is MODEL. Each
arm's cost is what it would have cost alone: the call records it rests on (the whole run for a recipe's
verdict; the member calls for the majority; one seat's calls for a single model). Its latency likewise:
the run's wall time for a recipe, the slowest seat's calls for the majority (seats run in parallel), the
seat's own calls for a single model.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from council.calls.records import CallRecord
from council.deliberation.vote import majority_label
from council.store.db import StoredRun
from .arms import Arm
from .golden import GoldenItem, normalize_answer, score_answer, score_label

__all__ = ["ArmOutcome", "OutcomeStatus", "budget_hit", "outcome_for", "skipped"]

OutcomeStatus = Literal["ok", "failed", "skipped_budget"]
_ESCALATION_NODES = {"adjudicate", "escalate"}


class ArmOutcome(BaseModel):
    """How one arm did on one golden item."""

    item_id: str
    arm: str
    line: int
    """Line of the golden file the item is on."""
    status: OutcomeStatus
    """``ok`` (an answer), ``failed`` (no answer: counted wrong), ``skipped_budget`` (not counted)."""
    prediction: str | None = None
    """The label (check) or answer text (ask) the arm gave."""
    correct: bool | None = None
    """Whether the prediction is right; None when it could not be scored (or there is none)."""
    abstained: bool = False
    """The arm said NOT_ENOUGH_INFO."""
    confidence: float | None = None
    """The arm's stated probability of being right (the verdict's confidence, a member's own confidence,
    or the majority's vote share)."""
    escalated: bool | None = None
    """For a recipe: whether the run went past its first answers to the adjudicator or a stronger tier."""
    cost_usd: float = 0.0
    """The arm's cost as if it had run alone: the sum of the call records in ``call_ids``."""
    tokens: int = 0
    latency_s: float | None = None
    run_id: str | None = None
    call_ids: list[str] = []
    error: str | None = None
    """Why it failed, or a note (a seat answered by a fallback model)."""
    updated_at: datetime | None = None

    @property
    def counted(self) -> bool:
        """Counts towards accuracy: answered and scorable, or failed (counted wrong)."""
        return self.status == "failed" or (self.status == "ok" and self.correct is not None)

    @property
    def right(self) -> bool:
        return self.status == "ok" and self.correct is True


def budget_hit(run: StoredRun) -> bool:
    """True when, in the run's latest (re)start, the latest attempt of some seat or step was refused by
    the budget. (A resumed run restarts at a later ``created_at``; what its earlier tries were refused
    may not be needed any more.)"""
    last: dict[tuple[str, str], CallRecord] = {}
    start = run.created_at.replace(tzinfo=None)
    for c in run.calls:
        if c.started_at.replace(tzinfo=None) < start:
            continue
        key = (c.node, c.member_label)
        if key not in last or c.attempt >= last[key].attempt:
            last[key] = c
    return any(c.error_kind == "budget" for c in last.values())


def skipped(item: GoldenItem, arm: Arm, run_id: str | None, why: str) -> ArmOutcome:
    return ArmOutcome(item_id=item.item_id, arm=arm.name, line=item.line, status="skipped_budget", run_id=run_id,
                      error=why)


def _sums(calls: Iterable[CallRecord]) -> tuple[float, int, float, list[str]]:
    calls = list(calls)
    return (round(sum(c.cost_usd for c in calls), 12), sum(c.prompt_tokens + c.completion_tokens for c in calls),
            sum(c.latency_s for c in calls), [c.call_id for c in calls])


def _scored(item: GoldenItem, arm: Arm, run: StoredRun, prediction: str | None, confidence: float | None,
            **fields: object) -> ArmOutcome:
    if item.label is not None:
        correct = score_label(prediction, item.label)
    else:
        correct = score_answer(prediction, item.answers)
    return ArmOutcome(item_id=item.item_id, arm=arm.name, line=item.line, status="ok", prediction=prediction,
                      correct=correct, abstained=prediction == "NOT_ENOUGH_INFO", confidence=confidence,
                      run_id=run.run_id, **fields)  # type: ignore[arg-type]


def _failed(item: GoldenItem, arm: Arm, run: StoredRun, why: str, calls: list[CallRecord]) -> ArmOutcome:
    cost, tokens, latency, ids = _sums(calls)
    return ArmOutcome(item_id=item.item_id, arm=arm.name, line=item.line, status="failed", cost_usd=cost,
                      tokens=tokens, latency_s=latency, run_id=run.run_id, call_ids=ids, error=why)


def _recipe(item: GoldenItem, arm: Arm, run: StoredRun) -> ArmOutcome:
    v = run.verdict
    cost, tokens, _, ids = _sums(run.calls)
    wall = (run.finished_at - run.created_at).total_seconds() if run.finished_at else None
    escalated = any(c.node in _ESCALATION_NODES for c in run.calls)
    if v is None or v.decided_by == "none":
        why = v.answer if v is not None else f"the run ended {run.status} without a verdict"
        return _failed(item, arm, run, why, run.calls)
    prediction = v.label if item.label is not None else v.answer
    return _scored(item, arm, run, prediction, v.confidence, escalated=escalated, cost_usd=cost, tokens=tokens,
                   latency_s=wall, call_ids=ids)


def _same(a: list[str], b: list[str]) -> bool:
    """Two short answers agree: equal after normalisation, or one occurs in the other as whole words."""
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    k = len(short)
    return bool(k) and any(long_[i:i + k] == short for i in range(len(long_) - k + 1))


def _plurality(texts: list[str]) -> tuple[str | None, int]:
    """The answer most other answers agree with (``_same``), and how many agree (itself included); a tie
    goes to the first member (by label)."""
    words = [normalize_answer(t) for t in texts]
    votes = [sum(_same(w, v) for v in words) for w in words]
    if not texts:
        return None, 0
    best = max(range(len(texts)), key=lambda i: (votes[i], -i))
    return texts[best], votes[best]


def _majority(item: GoldenItem, arm: Arm, run: StoredRun) -> ArmOutcome:
    calls = [c for c in run.calls if c.node == "member"]
    answers = run.answers
    if not answers:
        return _failed(item, arm, run, "no member answered", calls)
    if item.label is not None:
        prediction = majority_label(answers)
        agree = sum(a.label == prediction for a in answers)
    else:
        prediction, agree = _plurality([a.answer for a in sorted(answers, key=lambda a: a.member_label)])
    if prediction is None:
        return _failed(item, arm, run, "the members gave no label", calls)
    cost, tokens, _, ids = _sums(calls)
    seats: dict[str, float] = {}
    for c in calls:
        seats[c.member_label] = seats.get(c.member_label, 0.0) + c.latency_s
    return _scored(item, arm, run, prediction, agree / len(answers), cost_usd=cost, tokens=tokens,
                   latency_s=max(seats.values(), default=0.0), call_ids=ids)


def _single(item: GoldenItem, arm: Arm, run: StoredRun) -> ArmOutcome:
    seats = [s for s in run.panel if s.get("label") != "adjudicator"]
    seat = next((s for s in seats if s.get("chain") and s["chain"][0] == arm.model), None)
    if seat is None and len(seats) == 1:
        seat = seats[0]  # a run of its own: the one seat is this model's (its policy pins it)
    if seat is None:
        return _failed(item, arm, run, f"{arm.model} had no seat on this item's panel", [])
    label = seat["label"]
    calls = [c for c in run.calls if c.node == "member" and c.member_label == label]
    answer = next((a for a in run.answers if a.member_label == label), None)
    if answer is None:
        failure = next((f for f in run.failures if f.member_label == label), None)
        return _failed(item, arm, run, failure.reason if failure else "the member did not answer", calls)
    cost, tokens, latency, ids = _sums(calls)
    prediction = answer.label if item.label is not None else answer.answer
    note = None if answer.model == arm.model else f"answered by the fallback model {answer.model}"
    return _scored(item, arm, run, prediction, answer.confidence, cost_usd=cost, tokens=tokens, latency_s=latency,
                   call_ids=ids, error=note)


def outcome_for(item: GoldenItem, arm: Arm, run: StoredRun) -> ArmOutcome:
    """The arm's outcome on ``item``, read from ``run`` (the shared panel run, or the arm's own)."""
    if arm.kind == "recipe":
        return _recipe(item, arm, run)
    if arm.kind == "majority":
        return _majority(item, arm, run)
    return _single(item, arm, run)
