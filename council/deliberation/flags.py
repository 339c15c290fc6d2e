"""Which review conditions of a policy a verdict trips: the reasons a person must look at it.

A policy's ``human_review`` is ``never``, ``always``, or ``when_flagged`` (``when_contested``, its former
name, means the same): then each enabled ``review_*`` condition is checked and every one that fires is
recorded on the verdict as a ``ReviewReason``, so the review queue can say why a verdict is there and be
filtered by condition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from council.calls.answers import MemberAnswer
from council.config.policy import TaskPolicy

__all__ = ["REVIEW_CONDITIONS", "ReviewCondition", "ReviewReason", "review_reasons"]

ReviewCondition = Literal[
    "always", "contested", "low_agreement", "low_confidence", "degraded", "unverified_evidence", "tag",
    "overruled_vote", "suspicious_input",
]
REVIEW_CONDITIONS: tuple[str, ...] = ReviewCondition.__args__  # type: ignore[attr-defined]


class ReviewReason(BaseModel):
    """One review condition that fired for a verdict."""

    condition: ReviewCondition
    """Which condition of the policy fired."""
    detail: str
    """What was observed, e.g. ``confidence 0.41 below 0.60`` or ``risk=high``."""


def review_reasons(
    policy: TaskPolicy,
    *,
    contested: bool,
    agreement: float,
    confidence: float,
    degraded_reasons: list[str],
    answers: list[MemberAnswer],
    support: list[str],
    tags: dict[str, str],
    overruled: str | None = None,
    suspicious: list[str] | None = None,
) -> list[ReviewReason]:
    """The conditions of ``policy`` that fire for a verdict (empty: no review needed).

    ``contested``: the vote could not settle the verdict (the adjudicator was asked or a cluster stayed
    unresolved). ``support``: claim ids the verdict rests on; their citations decide the evidence rule.
    ``tags``: the run's item tags (a batch row's ``tags``). ``overruled``: how the adjudicator's label
    differed from where the vote leaned (None: it did not). ``suspicious``: one line per member or source
    whose text looked like instructions to the model."""
    if policy.human_review == "never":
        return []
    if policy.human_review == "always":
        return [ReviewReason(condition="always", detail=f"policy {policy.name} reviews every verdict")]
    out: list[ReviewReason] = []
    if policy.review_contested and contested:
        out.append(ReviewReason(condition="contested", detail="the weighted vote could not settle the verdict"))
    if policy.review_below_agreement is not None and agreement < policy.review_below_agreement:
        out.append(ReviewReason(condition="low_agreement",
                                detail=f"agreement {agreement:.2f} below {policy.review_below_agreement:.2f}"))
    if policy.review_below_confidence is not None and confidence < policy.review_below_confidence:
        out.append(ReviewReason(condition="low_confidence",
                                detail=f"confidence {confidence:.2f} below {policy.review_below_confidence:.2f}"))
    if policy.review_degraded and degraded_reasons:
        out.append(ReviewReason(condition="degraded", detail="; ".join(degraded_reasons)))
    if policy.evidence_required and policy.review_unverified_evidence:
        backing = set(support)
        verified = any(x.verified for a in answers for c in a.claims if c.claim_id in backing for x in c.citations)
        if not verified:
            out.append(ReviewReason(condition="unverified_evidence",
                                    detail="evidence is required but no claim the verdict rests on has a verified citation"))
    if policy.review_overruled and overruled:
        out.append(ReviewReason(condition="overruled_vote", detail=overruled))
    if policy.review_suspicious and suspicious:
        out.append(ReviewReason(condition="suspicious_input", detail="; ".join(suspicious)))
    for key, values in policy.review_tags:
        if tags.get(key) in values:
            out.append(ReviewReason(condition="tag", detail=f"{key}={tags[key]}"))
    return out
