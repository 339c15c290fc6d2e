"""Store access for the deliberation stages: peer reviews with their claim judgements, revision rounds and
escalations.

Tables ``reviews``, ``review_judgements`` and ``escalations`` (migration 0004); a revision round's answers
are rows of ``answers`` with their round, ``revised_from`` and the answer that replaced them
(``superseded_by``, migration 0009). Reviewers' reliabilities
are learned like members': agreement of their judgements with what the council finally accepted
(``accurate``) or rejected (``inaccurate``), smoothed toward the prior.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from council.calls.answers import MemberAnswer
from council.deliberation.cascade import Escalation
from council.deliberation.review import ClaimJudgement, Review
from council.deliberation.vote import Reliability
from council.errors import StoreError

from .mapping import answer_from_row, answer_values, claim_from_row, claim_values
from .tables import AnswerRow, ClaimRow, ClusterRow, EscalationRow, JudgementRow, ReviewRow

__all__ = ["add_escalations", "add_review", "add_revision", "load_escalations", "load_reviews", "reviewer_reliabilities",
           "stored_revision"]


def add_review(store: Any, review: Review) -> None:
    """Store one review and its judgements (replacing an earlier attempt's row of the same reviewer)."""
    rows: list[Any] = [(ReviewRow, dict(
        review_id=review.review_id, run_id=review.run_id, reviewer_label=review.reviewer_label,
        reviewer_model=review.reviewer_model, call_id=review.call_id, status=review.status,
        error_kind=review.error_kind, reason=review.reason, shown_json=json.dumps(review.shown),
        ranking_json=json.dumps(review.ranking)))]
    rows += [(JudgementRow, dict(review_id=review.review_id, claim_id=j.claim_id, run_id=review.run_id,
                                 reviewer_model=review.reviewer_model, verdict=j.verdict, reason=j.reason,
                                 quote=j.quote)) for j in review.judgements]
    store._write(*rows)


def load_reviews(store: Any, run_id: str) -> list[Review]:
    """The run's reviews, by reviewer label."""
    r, j = ReviewRow.__table__, JudgementRow.__table__  # type: ignore[attr-defined]
    try:
        with store.engine.connect() as conn:
            reviews = conn.execute(select(r).where(r.c.run_id == run_id).order_by(r.c.reviewer_label)).all()
            judgements = conn.execute(select(j).where(j.c.run_id == run_id)).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read {store.safe_url}: {type(exc).__name__}") from exc
    by_review: dict[str, list[ClaimJudgement]] = {}
    for x in judgements:
        by_review.setdefault(x.review_id, []).append(
            ClaimJudgement(claim_id=x.claim_id, verdict=x.verdict, reason=x.reason, quote=x.quote))
    return [Review(review_id=x.review_id, run_id=x.run_id, reviewer_label=x.reviewer_label,
                   reviewer_model=x.reviewer_model, call_id=x.call_id, status=x.status, error_kind=x.error_kind,
                   reason=x.reason, shown=json.loads(x.shown_json), ranking=json.loads(x.ranking_json),
                   judgements=by_review.get(x.review_id, [])) for x in reviews]


def reviewer_reliabilities(store: Any, prior: float, prior_weight: float) -> dict[str, Reliability]:
    """Each reviewing model's agreement with the clusters the council settled, smoothed toward ``prior``."""
    sql = text(
        "SELECT j.reviewer_model, SUM(CASE WHEN (k.status = 'accepted' AND j.verdict = 'accurate') "
        "OR (k.status = 'rejected' AND j.verdict = 'inaccurate') THEN 1 ELSE 0 END), COUNT(*) "
        "FROM review_judgements j JOIN claims c ON c.claim_id = j.claim_id "
        "JOIN clusters k ON k.cluster_id = c.cluster_id "
        "WHERE j.verdict IN ('accurate', 'inaccurate') AND k.status IN ('accepted', 'rejected') "
        "GROUP BY j.reviewer_model")
    try:
        with store.engine.connect() as conn:
            rows = [(m, int(a or 0), int(t or 0)) for m, a, t in conn.execute(sql)]
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read {store.safe_url}: {type(exc).__name__}") from exc
    return {m: Reliability(model=m, agree=a, total=t, value=(a + prior * prior_weight) / (t + prior_weight))
            for m, a, t in rows if t + prior_weight > 0}


def add_escalations(store: Any, escalations: list[Escalation]) -> None:
    store._write(*[(EscalationRow, dict(escalation_id=e.escalation_id, run_id=e.run_id, target=e.target,
                                        body_json=e.model_dump_json())) for e in escalations])


def load_escalations(store: Any, run_id: str) -> list[Escalation]:
    t = EscalationRow.__table__  # type: ignore[attr-defined]
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(t.c.body_json).where(t.c.run_id == run_id)).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read {store.safe_url}: {type(exc).__name__}") from exc
    return sorted((Escalation.model_validate_json(b) for (b,) in rows), key=lambda e: e.item)


def add_revision(store: Any, answer: MemberAnswer) -> None:
    """Store a revision round's answer and retire the one it revises, in one transaction: the old answer is
    ``superseded_by`` the new one, its claims leave their clusters, and the run's clusters (of the earlier
    round's vote) are dropped: the next vote stores its own."""
    assert answer.revised_from is not None
    a, c, k = AnswerRow.__table__, ClaimRow.__table__, ClusterRow.__table__  # type: ignore[attr-defined]
    with store.begin() as conn:
        store._upsert(conn, [(AnswerRow, answer_values(answer))]
                      + [(ClaimRow, claim_values(x, i)) for i, x in enumerate(answer.claims)])
        conn.execute(update(a).where(a.c.answer_id == answer.revised_from).values(superseded_by=answer.answer_id))
        conn.execute(update(c).where(c.c.answer_id == answer.revised_from).values(cluster_id=None))
        conn.execute(delete(k).where(k.c.run_id == answer.run_id))


def stored_revision(store: Any, run_id: str, member_label: str, round_: int) -> MemberAnswer | None:
    """The member's stored answer of revision round ``round_`` (a resumed run does not ask for it again)."""
    a, c = AnswerRow.__table__, ClaimRow.__table__  # type: ignore[attr-defined]
    with store.connect() as conn:
        row = conn.execute(select(a).where(a.c.run_id == run_id, a.c.member_label == member_label,
                                           a.c.round == round_)).first()
        if row is None:
            return None
        claims = conn.execute(select(c).where(c.c.answer_id == row.answer_id).order_by(c.c.position)).all()
    return answer_from_row(row, [claim_from_row(x) for x in claims])
