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

import json
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from council.calls.answers import Citation, Claim, MemberAnswer, MemberFailure, MemberOutcome
from council.errors import StoreError

__all__ = ["forget_failure", "interrupt_pending", "next_attempt", "reset_derived", "run_exists", "stored_outcome"]

_INTERRUPTED = "the process making this call stopped before it ended; the provider may have billed it"


def _tables() -> Any:
    from . import tables

    return tables


def _fail(store: Any, exc: SQLAlchemyError) -> StoreError:
    return StoreError(f"cannot resume from {store.safe_url}: {type(exc).__name__}")


def run_exists(store: Any, run_id: str) -> bool:
    t = _tables().RunRow.__table__
    try:
        with store.engine.connect() as conn:
            return conn.execute(select(t.c.run_id).where(t.c.run_id == run_id)).first() is not None
    except SQLAlchemyError as exc:
        raise _fail(store, exc) from exc


def interrupt_pending(store: Any, run_id: str) -> int:
    """Mark the run's ``pending`` call records ``interrupted``; return how many there were."""
    t = _tables().CallRow.__table__
    try:
        with store.engine.begin() as conn:
            res = conn.execute(update(t).where(t.c.run_id == run_id, t.c.status == "pending").values(
                status="interrupted", error_kind="interrupted", error_message=_INTERRUPTED, cost_source="unknown"))
            return res.rowcount or 0
    except SQLAlchemyError as exc:
        raise _fail(store, exc) from exc


def next_attempt(store: Any, run_id: str, node: str, member_label: str) -> int:
    """1 + the highest attempt recorded for (run, node, label); 1 when there is none."""
    t = _tables().CallRow.__table__
    try:
        with store.engine.connect() as conn:
            top = conn.execute(select(func.max(t.c.attempt)).where(
                t.c.run_id == run_id, t.c.node == node, t.c.member_label == member_label)).scalar_one()
    except SQLAlchemyError as exc:
        raise _fail(store, exc) from exc
    return int(top or 0) + 1


def stored_outcome(store: Any, run_id: str, member_label: str) -> MemberOutcome | None:
    """The member's stored answer, or its stored failure unless that was for lack of budget; else None."""
    st = _tables()
    a, c, f = st.AnswerRow.__table__, st.ClaimRow.__table__, st.FailureRow.__table__
    try:
        with store.engine.connect() as conn:
            ans = conn.execute(select(a).where(a.c.run_id == run_id, a.c.member_label == member_label)).first()
            if ans is not None:
                claims = conn.execute(select(c).where(c.c.answer_id == ans.answer_id).order_by(c.c.position)).all()
                answer = MemberAnswer(
                    answer_id=ans.answer_id, run_id=run_id, member_label=member_label, model=ans.model,
                    call_id=ans.call_id, answer=ans.answer, label=ans.label, raw_text=ans.raw_text,
                    confidence=ans.confidence,
                    claims=[Claim(claim_id=x.claim_id, run_id=run_id, answer_id=x.answer_id, member_label=member_label,
                                  model=x.model, text=x.text, confidence=x.confidence,
                                  citations=[Citation(**d) for d in json.loads(x.citations_json)])
                            for x in claims],
                )
                return MemberOutcome(member_label=member_label, answer=answer)
            fail = conn.execute(select(f).where(f.c.run_id == run_id, f.c.member_label == member_label)).first()
    except SQLAlchemyError as exc:
        raise _fail(store, exc) from exc
    if fail is None or fail.error_kind == "budget":
        return None
    return MemberOutcome(member_label=member_label, failure=MemberFailure(
        run_id=run_id, member_label=member_label, model_requested=fail.model_requested, error_kind=fail.error_kind,
        reason=fail.reason, call_ids=json.loads(fail.call_ids_json), raw_text=fail.raw_text))


def forget_failure(store: Any, run_id: str, member_label: str) -> None:
    """Drop a stored failure of a member about to be asked again (its call records stay)."""
    t = _tables().FailureRow.__table__
    try:
        with store.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.run_id == run_id, t.c.member_label == member_label))
    except SQLAlchemyError as exc:
        raise _fail(store, exc) from exc


def reset_derived(store: Any, run_id: str) -> None:
    """Drop the clusters, verdict and review flags of an earlier attempt at the run; the resumed run
    rebuilds them."""
    st = _tables()
    try:
        with store.engine.begin() as conn:
            for table in (st.ClusterRow.__table__, st.VerdictRow.__table__, st.ReviewFlagRow.__table__):
                conn.execute(delete(table).where(table.c.run_id == run_id))
    except SQLAlchemyError as exc:
        raise _fail(store, exc) from exc
