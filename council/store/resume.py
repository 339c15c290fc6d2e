"""Resuming an interrupted run from what the store already holds.

A run is resumed (same run id) when the process that ran it died or was stopped, or when it ran out of
budget. What was finished is kept and not paid for twice; what was not is redone with new attempts:

- ``pending`` call records left by the dead process become ``interrupted`` (the request may have been
  billed; its cost is unknown);
- a member that already answered, or failed for any reason but the budget, keeps its stored outcome;
- a member, the adjudicator or the embedder that runs again numbers its attempts after the ones already
  recorded for that run, node and label, so no call id is ever reused: every real call keeps exactly one
  record;
- clusters and the verdict of an earlier attempt at the run are dropped, and rebuilt.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update

from council.calls.answers import MemberOutcome
from .mapping import answer_from_row, claim_from_row, failure_from_row
from .tables import AnswerRow, CallRow, ClaimRow, ClusterRow, FailureRow, ReviewFlagRow, VerdictRow

__all__ = ["forget_failure", "interrupt_pending", "next_attempt", "reset_derived", "stored_outcome"]

_INTERRUPTED = "the process making this call stopped before it ended; the provider may have billed it"


def interrupt_pending(store: Any, run_id: str) -> int:
    """Mark the run's ``pending`` call records ``interrupted``; return how many there were."""
    t = CallRow.__table__
    with store.begin() as conn:
        res = conn.execute(update(t).where(t.c.run_id == run_id, t.c.status == "pending").values(
            status="interrupted", error_kind="interrupted", error_message=_INTERRUPTED, cost_source="unknown"))
        return res.rowcount or 0


def next_attempt(store: Any, run_id: str, node: str, member_label: str) -> int:
    """1 + the highest attempt recorded for (run, node, label); 1 when there is none."""
    t = CallRow.__table__
    with store.connect() as conn:
        top = conn.execute(select(func.max(t.c.attempt)).where(
            t.c.run_id == run_id, t.c.node == node, t.c.member_label == member_label)).scalar_one()
    return int(top or 0) + 1


def stored_outcome(store: Any, run_id: str, member_label: str) -> MemberOutcome | None:
    """The member's stored first answer, or its stored failure unless that was for lack of budget; else None.
    (Answers of revision rounds are kept too: the revise stage finds them with ``stored_revision``.)"""
    a, c, f = AnswerRow.__table__, ClaimRow.__table__, FailureRow.__table__
    with store.connect() as conn:
        ans = conn.execute(select(a).where(a.c.run_id == run_id, a.c.member_label == member_label,
                                           a.c.round == 1)).first()
        if ans is not None:
            claims = conn.execute(select(c).where(c.c.answer_id == ans.answer_id).order_by(c.c.position)).all()
            answer = answer_from_row(ans, [claim_from_row(x) for x in claims])
            return MemberOutcome(member_label=member_label, answer=answer)
        fail = conn.execute(select(f).where(f.c.run_id == run_id, f.c.member_label == member_label)).first()
    if fail is None or fail.error_kind == "budget":
        return None
    return MemberOutcome(member_label=member_label, failure=failure_from_row(fail))


def forget_failure(store: Any, run_id: str, member_label: str) -> None:
    """Drop a stored failure of a member about to be asked again (its call records stay)."""
    t = FailureRow.__table__
    with store.begin() as conn:
        conn.execute(delete(t).where(t.c.run_id == run_id, t.c.member_label == member_label))


def reset_derived(store: Any, run_id: str) -> None:
    """Drop the clusters, verdict and review flags of an earlier attempt at the run; the resumed run
    rebuilds them."""
    with store.begin() as conn:
        for table in (ClusterRow.__table__, VerdictRow.__table__, ReviewFlagRow.__table__):
            conn.execute(delete(table).where(table.c.run_id == run_id))
