"""The weighted vote: what policy code settles before any adjudicator is asked.

Each member's say counts by its log-odds weight ``log(p / (1 - p))`` where ``p`` is its effective accuracy:
its reliability learned from past runs in the store, pulled toward chance (0.5) by low stated confidence
and, when sources were given, by unverified evidence:

    p = 0.5 + (reliability - 0.5) * (0.5 + 0.5 * confidence) * (1.0 if verified or no sources else 0.5)

With independent members this is the Bayes-optimal weighted majority, and ``sigmoid(sum of weights)`` is
the posterior that the claim (or label) is right. A cluster nobody contradicts is accepted once at least
``min_supporters`` members state it; a cluster with opposition is settled only when its posterior is at
least ``vote_settle_at`` (accepted) or at most ``1 - vote_settle_at`` (rejected); otherwise it is contested
and goes to the adjudicator. The same rule settles a fact check's label.
"""

from __future__ import annotations

import math
from collections import Counter

from pydantic import BaseModel, Field

from council.calls.answers import Claim, FactLabel, MemberAnswer
from .clusters import ClaimCluster
from council.config.policy import TaskPolicy

__all__ = ["LabelVote", "Reliability", "effective_accuracy", "settle_clusters", "vote_label",
           "majority_label", "best_member", "weight"]

_CLIP = (0.02, 0.98)


class Reliability(BaseModel):
    """A model's learned accuracy: agreement with final verdicts (or human feedback) in past runs."""

    model: str
    agree: int = 0
    total: int = 0
    value: float
    """Smoothed accuracy: (agree + prior * prior_weight) / (total + prior_weight)."""


class LabelVote(BaseModel):
    """The weighted vote over members' fact-check labels."""

    label: FactLabel
    posterior: float
    """Posterior of ``label`` (for NOT_ENOUGH_INFO: the share of members that abstained)."""
    settled: bool
    """True when the vote decides without the adjudicator."""
    votes: dict[str, FactLabel] = Field(default_factory=dict)
    """Member label -> its label."""
    log_odds_supported: float = 0.0
    """Summed weights for SUPPORTED minus those for REFUTED."""


def effective_accuracy(reliability: float, confidence: float | None, evidence_ok: bool = True) -> float:
    c = 1.0 if confidence is None else min(max(confidence, 0.0), 1.0)
    p = 0.5 + (reliability - 0.5) * (0.5 + 0.5 * c) * (1.0 if evidence_ok else 0.5)
    return min(max(p, _CLIP[0]), _CLIP[1])


def weight(p: float) -> float:
    p = min(max(p, _CLIP[0]), _CLIP[1])
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -50 else 0.0


def _claim_evidence_ok(claim: Claim, sources_given: bool) -> bool:
    return not sources_given or any(c.verified for c in claim.citations)


def settle_clusters(
    clusters: list[ClaimCluster],
    claims: dict[str, Claim],
    reliability: dict[str, float],
    policy: TaskPolicy,
    sources_given: bool,
    claim_factors: dict[str, float] | None = None,
) -> None:
    """Score every cluster and settle what the vote can (in place); see the module docstring.

    ``claim_factors`` (claim id -> factor in [0, 1]) shrinks a claim's effective accuracy toward chance:
    ``0.5 + (p - 0.5) * factor`` (peer reviewers' judgements; a missing claim keeps factor 1)."""
    factors = claim_factors or {}
    # A member's weight on a cluster: its strongest claim in it.
    member_w: dict[str, dict[str, float]] = {}
    for k in clusters:
        ws: dict[str, float] = {}
        for cid in k.claim_ids:
            cl = claims[cid]
            p = effective_accuracy(reliability.get(cl.model, policy.reliability_prior), cl.confidence,
                                   _claim_evidence_ok(cl, sources_given))
            if cid in factors:
                p = 0.5 + (p - 0.5) * min(max(factors[cid], 0.0), 1.0)
            ws[cl.member_label] = max(ws.get(cl.member_label, -math.inf), weight(p))
        member_w[k.cluster_id] = ws
    for k in clusters:
        pro = member_w[k.cluster_id]
        con: dict[str, float] = {}
        for other in k.contradicts:
            for m, w in member_w[other].items():
                if m not in pro:
                    con[m] = max(con.get(m, -math.inf), w)
        k.pro_weight = sum(pro.values())
        k.con_weight = sum(con.values())
        k.support = _sigmoid(k.pro_weight - k.con_weight)
        if not con:
            if len(pro) >= policy.min_supporters and k.support >= 0.5:
                k.status, k.settled_by = "accepted", "vote"
            else:
                k.status, k.settled_by = "uncorroborated", "vote"
        elif k.support >= policy.vote_settle_at:
            k.status, k.settled_by = "accepted", "vote"
        elif k.support <= 1.0 - policy.vote_settle_at:
            k.status, k.settled_by = "rejected", "vote"
        else:
            k.status, k.settled_by = "contested", "none"


def answer_confidence(answer: MemberAnswer) -> float | None:
    if answer.confidence is not None:
        return answer.confidence
    if answer.claims:
        return sum(c.confidence for c in answer.claims) / len(answer.claims)
    return None


def vote_label(
    answers: list[MemberAnswer], reliability: dict[str, float], policy: TaskPolicy, sources_given: bool,
    claim_factors: dict[str, float] | None = None,
    member_factors: dict[str, float] | None = None,
) -> LabelVote:
    """Weighted vote over SUPPORTED/REFUTED labels; NOT_ENOUGH_INFO and missing labels abstain.

    ``claim_factors`` (peer reviews): a member's label counts with the mean factor of its judged claims,
    as in ``settle_clusters`` (a member whose reasons reviewers judged inaccurate counts less).
    ``member_factors`` (member label -> factor): caps that factor for the whole member (a suspicious
    member's label counts at chance even when it stated no claim)."""
    factors = claim_factors or {}
    capped = member_factors or {}
    votes: dict[str, FactLabel] = {a.member_label: a.label for a in answers if a.label is not None}
    log_odds = 0.0
    voters = 0
    for a in answers:
        if a.label not in ("SUPPORTED", "REFUTED"):
            continue
        evidence_ok = not sources_given or any(c.verified for cl in a.claims for c in cl.citations)
        p = effective_accuracy(reliability.get(a.model, policy.reliability_prior), answer_confidence(a), evidence_ok)
        judged = [factors[c.claim_id] for c in a.claims if c.claim_id in factors]
        factor = sum(judged) / len(judged) if judged else 1.0
        if a.member_label in capped:
            factor = min(factor, capped[a.member_label])
        if factor != 1.0:
            p = 0.5 + (p - 0.5) * min(max(factor, 0.0), 1.0)
        log_odds += weight(p) if a.label == "SUPPORTED" else -weight(p)
        voters += 1
    if voters == 0:
        abstained = sum(1 for a in answers if a.label == "NOT_ENOUGH_INFO")
        share = abstained / len(answers) if answers else 0.0
        return LabelVote(label="NOT_ENOUGH_INFO", posterior=share, settled=len(answers) >= policy.min_supporters,
                         votes=votes)
    p_supported = _sigmoid(log_odds)
    label: FactLabel = "SUPPORTED" if p_supported >= 0.5 else "REFUTED"
    posterior = max(p_supported, 1.0 - p_supported)
    return LabelVote(label=label, posterior=posterior, settled=posterior >= policy.vote_settle_at, votes=votes,
                     log_odds_supported=log_odds)


def majority_label(answers: list[MemberAnswer]) -> FactLabel | None:
    """Plain (unweighted) majority of the members' labels; a tie is NOT_ENOUGH_INFO."""
    counts = Counter(a.label for a in answers if a.label is not None)
    if not counts:
        return None
    ranked = counts.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "NOT_ENOUGH_INFO"
    return ranked[0][0]


def best_member(answers: list[MemberAnswer], reliability: dict[str, float], quality: dict[str, float],
                prior: float) -> MemberAnswer | None:
    """The answer of the member whose model is most reliable so far; catalog quality, then the earlier
    member label, break ties (the same order everywhere a single member's answer is chosen)."""
    if not answers:
        return None
    return min(answers, key=lambda a: (-reliability.get(a.model, prior), -quality.get(a.model, 0.0), a.member_label))
