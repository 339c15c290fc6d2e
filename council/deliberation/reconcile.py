"""Reconciliation: from the members' outcomes to what the weighted vote settled and what is left.

1. ``verified_answers``: the outcomes in member order, split into answers and failures; every citation
   is checked against the passage it names (``verified`` True/False, None when no sources were given).
2. ``reconcile``: claims are grouped into clusters of equivalent claims (with the embedder the caller
   prepared, since preparing it may be a billed model call), each claim gets its cluster id, the weighted
   vote settles what it can (``settle_clusters``; ``vote_label`` for a fact check) and ``adjudication_need``
   says whether the adjudicator must be asked, and why.
"""

from __future__ import annotations

from pydantic import BaseModel

from council.calls.answers import MemberAnswer, MemberFailure, MemberOutcome
from council.config.policy import TaskPolicy
from .clusters import ClaimCluster, cluster_claims
from .embeddings import Embedder
from .injection import SuspiciousMember, SuspiciousSource, scan_answers, scan_passages, suspicious_factors
from .sources import Passage, verify_quote
from .vote import LabelVote, settle_clusters, vote_label

__all__ = ["Reconciliation", "adjudication_need", "reconcile", "verified_answers"]


class Reconciliation(BaseModel):
    """What the vote settled, and what is left for the adjudicator."""

    answers: list[MemberAnswer]
    """The answers, their citations verified and claims assigned to clusters."""
    failures: list[MemberFailure]
    clusters: list[ClaimCluster]
    label_vote: LabelVote | None
    needs_adjudicator: bool
    reason: str
    """Why the adjudicator is (or is not) needed."""
    suspicious: list[SuspiciousMember] = []
    """Members whose text looked like instructions to the model: their claims counted at chance."""
    suspicious_sources: list[SuspiciousSource] = []
    """Source passages whose text looked like instructions to the model."""


def verified_answers(
    outcomes: list[MemberOutcome], passages: list[Passage]
) -> tuple[list[MemberAnswer], list[MemberFailure]]:
    """The answers (citations verified against ``passages``) and failures, in member-label order. With
    revision rounds a member has an outcome per round: its latest answer counts."""
    by_id = {p.passage_id: p for p in passages}
    latest: dict[str, MemberOutcome] = {}
    for o in outcomes:
        cur = latest.get(o.member_label)
        if cur is None or (o.answer is not None and (cur.answer is None or o.answer.round > cur.answer.round)):
            latest[o.member_label] = o
    ordered = sorted(latest.values(), key=lambda o: o.member_label)
    failures = [o.failure for o in ordered if o.failure is not None]
    answers: list[MemberAnswer] = []
    for o in ordered:
        if o.answer is None:
            continue
        claims = [
            c.model_copy(update={"citations": [
                x.model_copy(update={"verified": verify_quote(x.quote, by_id.get(x.source_id)) if by_id else None})
                for x in c.citations
            ]})
            for c in o.answer.claims
        ]
        answers.append(o.answer.model_copy(update={"claims": claims}))
    return answers, failures


def adjudication_need(
    task: str, answers: list[MemberAnswer], clusters: list[ClaimCluster], label: LabelVote | None, quorum_met: bool
) -> tuple[bool, str]:
    """Whether the adjudicator must be asked, and why (or why not), in one line."""
    contested = [k for k in clusters if k.status == "contested"]
    if not answers:
        return False, "no member answered"
    if label is not None and not label.settled:
        return True, ("quorum not met" if not quorum_met else f"label vote not settled (posterior {label.posterior:.2f})")
    if contested:
        return True, f"{len(contested)} contested cluster(s)"
    if task == "ask" and len(answers) > 1 and not any(k.status == "accepted" for k in clusters):
        return True, "no claim was corroborated by a second member"
    return False, "settled by the weighted vote"


def reconcile(
    *,
    task: str,
    answers: list[MemberAnswer],
    failures: list[MemberFailure],
    embedder: Embedder,
    reliability: dict[str, float],
    policy: TaskPolicy,
    sources_given: bool,
    claim_factors: dict[str, float] | None = None,
    passages: list[Passage] | None = None,
    detect_injection: bool = True,
) -> Reconciliation:
    """Cluster the answers' claims and settle what the weighted vote can; see the module docstring.

    ``claim_factors`` (claim id -> factor in [0, 1]) scales how far a claim's weight may move from
    chance: peer reviewers' judgements, when a recipe has a review stage (1.0 = no change).
    ``detect_injection``: members whose text trips a rule of ``council.deliberation.injection`` are
    suspicious, their claims and label counted at ``SUSPICIOUS_FACTOR``; ``passages`` are scanned too.
    """
    suspicious = scan_answers(answers) if detect_injection else []
    flagged_passages = scan_passages(passages or []) if detect_injection else []
    if suspicious:
        claim_factors = suspicious_factors(answers, suspicious, claim_factors)
    all_claims = [c for a in answers for c in a.claims]
    clusters = cluster_claims(all_claims, embedder)
    cluster_of = {cid: k.cluster_id for k in clusters for cid in k.claim_ids}
    answers = [a.model_copy(update={"claims": [c.model_copy(update={"cluster_id": cluster_of.get(c.claim_id)})
                                                for c in a.claims]}) for a in answers]
    by_id = {c.claim_id: c for a in answers for c in a.claims}
    settle_clusters(clusters, by_id, reliability, policy, sources_given, claim_factors=claim_factors)
    quorum_met = len(answers) >= policy.quorum
    label = (vote_label(answers, reliability, policy, sources_given, claim_factors=claim_factors,
                        member_factors={m.member_label: m.factor for m in suspicious})
             if task == "check" and answers else None)
    if label is not None and not quorum_met:
        label.settled = False
    needs, why = adjudication_need(task, answers, clusters, label, quorum_met)
    return Reconciliation(answers=answers, failures=failures, clusters=clusters, label_vote=label,
                          needs_adjudicator=needs, reason=why, suspicious=suspicious,
                          suspicious_sources=flagged_passages)
