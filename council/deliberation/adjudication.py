"""The adjudicator, asked only about what the weighted vote could not settle, and the verdict.

The adjudicator sees the members as anonymous labels (``Member 1``...) in an order shuffled per run, their
claims labelled ``C1``..., and the clusters to rule on labelled ``K1``... in order of appearance. Member text
is fenced as data inside tags carrying a per-run nonce, so text inside an answer or a source cannot close
the fence or pose as instructions; the ruling must parse as ``RulingDraft`` or it is retried, then the
next adjudicator model is tried, so injected text cannot change the verdict's format either.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field

from council.calls.answers import FactLabel, MemberAnswer, MemberFailure
from council.calls.budget import Budget
from .clusters import ClaimCluster
from .flags import review_reasons
from council.ids import content_id
from council.calls.members import CallContext, run_chain
from council.calls.ratelimit import RateLimiter
from council.calls.prompts import render, schema_text
from council.config.policy import TaskPolicy
from council.config.qualify import Panel
from council.calls.records import CallRecord
from .verdict import CheckRulingDraft, FailedMember, RulingDraft, Verdict
from .vote import LabelVote, best_member, majority_label

__all__ = ["Adjudication", "adjudicate_contested", "build_verdict"]


class Adjudication(BaseModel):
    """The adjudicator's ruling and how its labels map back to records."""

    ruling: RulingDraft | None
    call_id: str | None = None
    error_kind: str | None = None
    reason: str | None = None
    claim_labels: dict[str, str] = Field(default_factory=dict)
    """Prompt label (``C1``) -> claim id."""
    cluster_labels: dict[str, str] = Field(default_factory=dict)
    """Prompt label (``K1``) -> cluster id, for the clusters it was asked to rule on."""


def _fence_safe(text: str) -> str:
    # Angle brackets cannot appear inside fenced data, so nothing in it can open or close a tag.
    return text.replace("<", "‹").replace(">", "›")


async def adjudicate_contested(
    *,
    request_id: str,
    task: str,
    question: str,
    rec_answers: list[MemberAnswer],
    clusters: list[ClaimCluster],
    label_vote: LabelVote | None,
    panel: Panel,
    template: str,
    shuffle: bool,
    sink: Callable[[CallRecord], None],
    budget: Budget | None,
    first_attempt: int = 1,
    on_send: Callable[[CallRecord], None] | None = None,
    limiter: RateLimiter | None = None,
    review_notes: dict[str, str] | None = None,
) -> Adjudication:
    """Ask the adjudicator panel to rule on the contested clusters (and label); see the module docstring.

    ``review_notes`` (claim id -> a summary of peer reviewers' judgements) is shown beside each claim."""
    order = list(rec_answers)
    if shuffle:
        random.Random(request_id).shuffle(order)
    to_rule = [k for k in clusters if k.status == "contested"]
    if not to_rule and task == "ask":
        to_rule = [k for k in clusters if k.status == "uncorroborated"]
    claim_labels: dict[str, str] = {}
    label_of_claim: dict[str, str] = {}
    member_of_label: dict[str, str] = {}
    members_view = []
    for i, a in enumerate(order, start=1):
        member_of_label[a.member_label] = f"Member {i}"
        view_claims = []
        for c in a.claims:
            lab = f"C{len(claim_labels) + 1}"
            claim_labels[lab] = c.claim_id
            label_of_claim[c.claim_id] = lab
            evidence = ""
            if c.citations:
                verified = sum(1 for x in c.citations if x.verified)
                evidence = f"{verified} of {len(c.citations)} citations verified"
            if review_notes and c.claim_id in review_notes:
                evidence = "; ".join(x for x in (evidence, review_notes[c.claim_id]) if x)
            view_claims.append({"label": lab, "text": _fence_safe(c.text), "confidence": c.confidence, "evidence": evidence})
        members_view.append({
            "label": f"Member {i}", "answer": _fence_safe(a.answer), "label_given": a.label or "",
            "confidence": a.confidence, "claims": view_claims,
        })
    cluster_labels: dict[str, str] = {}
    by_id = {k.cluster_id: k for k in clusters}
    appearance = [label_of_claim[c.claim_id] for a in order for c in a.claims]
    ruled = sorted(to_rule, key=lambda k: min(appearance.index(label_of_claim[c]) for c in k.claim_ids))
    for k in ruled:
        cluster_labels[f"K{len(cluster_labels) + 1}"] = k.cluster_id
    k_of = {v: kl for kl, v in cluster_labels.items()}
    clusters_view = [
        {
            "label": k_of[k.cluster_id],
            "claims": sorted((label_of_claim[c] for c in k.claim_ids), key=lambda s: int(s[1:])),
            "contradicts": [k_of.get(o, "another cluster") for o in k.contradicts if o in by_id],
        }
        for k in ruled
    ]
    nonce = content_id(request_id, "fence")[:8]
    # A fact check's ruling must carry a label: the schema makes it required (and first).
    schema: type[RulingDraft] = CheckRulingDraft if task == "check" else RulingDraft
    prompt = render(
        template, task=task, question=_fence_safe(question), members=members_view, clusters=clusters_view,
        nonce=nonce, schema=schema_text(schema),
        label_unsettled=bool(label_vote is not None and not label_vote.settled),
    )
    ctx = CallContext(run_id=request_id, node="adjudicate", member_label="adjudicator", policy=panel.policy,
                      prompt=prompt, sink=sink, budget=budget, first_attempt=first_attempt, on_send=on_send,
                      limiter=limiter)
    out = await run_chain(ctx, panel.seats[0].chain, schema)
    return Adjudication(ruling=out.value, call_id=out.call_id, error_kind=out.error_kind, reason=out.reason,
                        claim_labels=claim_labels, cluster_labels=cluster_labels)


class _Decision(NamedTuple):
    """What the deciding step concluded: the answer, the fact check's label, its confidence and who decided."""

    answer: str
    label: FactLabel | None
    confidence: float
    decided_by: Literal["adjudicator", "vote", "none"]


def _degraded_reasons(member_panel: Panel, answers: list[MemberAnswer], failures: list[MemberFailure],
                      adjudication: Adjudication | None) -> tuple[list[str], bool]:
    """Why the council is degraded (failed members, unfilled seats, quorum, a failed adjudicator), and
    whether the quorum was met."""
    policy = member_panel.policy
    reasons = [f"member {f.member_label} ({f.model_requested}) failed: {f.error_kind}" for f in failures]
    if len(member_panel.seats) < policy.panel_size:
        reasons.append(f"only {len(member_panel.seats)} of {policy.panel_size} seats could be filled")
    quorum_met = len(answers) >= policy.quorum
    if not quorum_met:
        reasons.append(f"quorum not met: {len(answers)} of {policy.quorum} required members answered")
    if adjudication is not None and adjudication.ruling is None:
        reasons.append(f"adjudicator failed: {adjudication.error_kind} ({adjudication.reason})")
    return reasons, quorum_met


def _apply_rulings(clusters: list[ClaimCluster], adjudication: Adjudication | None) -> tuple[list[str], list[str]]:
    """Set the clusters' final statuses (in place) from the adjudicator's rulings: a ruled cluster takes
    the ruling; a cluster it was asked about but did not rule on, or a contested cluster nobody ruled on,
    is unresolved. Return the claim ids the ruling itself cites as supported and as contradicted."""
    by_id = {k.cluster_id: k for k in clusters}
    extra_support: list[str] = []
    extra_against: list[str] = []
    if adjudication is not None:
        ruling = adjudication.ruling
        asked = set(adjudication.cluster_labels.values())
        for r in ruling.rulings if ruling else []:
            cid = adjudication.cluster_labels.get(r.cluster)
            if cid is None:
                continue
            k = by_id[cid]
            k.status = {"accept": "accepted", "reject": "rejected", "unresolved": "unresolved"}[r.decision]
            k.settled_by, k.rationale = "adjudicator", r.rationale
            asked.discard(cid)
        for cid in asked:  # asked about but not ruled on
            by_id[cid].status, by_id[cid].settled_by = "unresolved", "none"
        if ruling:
            extra_support = [adjudication.claim_labels[x] for x in ruling.supported if x in adjudication.claim_labels]
            extra_against = [adjudication.claim_labels[x] for x in ruling.contradicted if x in adjudication.claim_labels]
    for k in clusters:
        if k.status == "contested":  # never reached a ruling
            k.status, k.settled_by = "unresolved", "none"
    return extra_support, extra_against


def _support_and_against(clusters: list[ClaimCluster], extra_support: list[str],
                         extra_against: list[str]) -> tuple[list[str], list[str]]:
    """The claim ids the verdict rests on (accepted clusters, then the ruling's own citations) and those
    it rejects (rejected clusters, then the ruling's, never a supported claim)."""
    support = [c for k in clusters if k.status == "accepted" for c in k.claim_ids]
    support += [c for c in extra_support if c not in support]
    against = [c for k in clusters if k.status == "rejected" for c in k.claim_ids]
    against += [c for c in extra_against if c not in against and c not in support]
    return support, against


def _decide(*, task: str, policy: TaskPolicy, answers: list[MemberAnswer], label_vote: LabelVote | None,
            adjudication: Adjudication | None, reliability: dict[str, float], quality: dict[str, float],
            support_set: set[str], cluster_of: dict[str, ClaimCluster], reasons: list[str]) -> _Decision:
    """Choose the answer, label and confidence: the adjudicator's ruling when there is one, else the
    weighted vote, else nothing. Appends to ``reasons`` why a verdict fell back to the vote or to nothing."""
    ruling = adjudication.ruling if adjudication else None
    if ruling is not None:
        label = None
        if task == "check":
            label = ruling.label or (label_vote.label if label_vote else "NOT_ENOUGH_INFO")
        return _Decision(ruling.answer, label, ruling.confidence, "adjudicator")
    if not answers:
        reasons.append("no member answered")
        return _Decision("no verdict: " + "; ".join(reasons), "NOT_ENOUGH_INFO" if task == "check" else None,
                         0.0, "none")
    if adjudication is not None:
        reasons.append("verdict is the unsettled weighted vote")
    if task == "check" and label_vote is not None:
        aligned = [a for a in answers if a.label == label_vote.label] or answers
        chosen_one = best_member(aligned, reliability, quality, policy.reliability_prior)
        assert chosen_one is not None
        return _Decision(chosen_one.answer, label_vote.label, label_vote.posterior, "vote")

    def backing(a: MemberAnswer) -> list[float]:
        return [cluster_of[c.claim_id].support for c in a.claims if c.claim_id in support_set and c.claim_id in cluster_of]

    chosen = max(answers, key=lambda a: (sum(backing(a)), reliability.get(a.model, policy.reliability_prior)))
    mine = backing(chosen)
    return _Decision(chosen.answer, None, sum(mine) / len(mine) if mine else 0.0, "vote")


def _agreement(task: str, answers: list[MemberAnswer], decision: _Decision, support_set: set[str]) -> float:
    """For a decided fact check, the share of members giving its label; otherwise the share of answering
    members with a claim in the support set (0 when nothing was decided)."""
    if task == "check" and decision.label is not None and answers:
        return sum(1 for a in answers if a.label == decision.label) / len(answers)
    supporters = {c.member_label for a in answers for c in a.claims if c.claim_id in support_set}
    return len(supporters) / len(answers) if answers and decision.decided_by != "none" else 0.0


def _majority(task: str, answers: list[MemberAnswer], cluster_of: dict[str, ClaimCluster]) -> str | None:
    """What a plain majority said: the majority label of a fact check, else the answer whose claims the
    most members corroborate (the later member label wins a tie)."""
    if task == "check":
        return majority_label(answers)

    def corroboration(a: MemberAnswer) -> int:
        return sum(len(cluster_of[c.claim_id].member_labels) for c in a.claims if c.claim_id in cluster_of)

    return max(answers, key=lambda a: (corroboration(a), a.member_label)).answer if answers else None


def _best_member_fields(task: str, best: MemberAnswer | None) -> dict[str, str | None]:
    """The verdict's ``best_member*`` fields for the most reliable member (its label for a fact check)."""
    if best is None:
        return {"best_member": None, "best_member_model": None, "best_member_answer": None}
    said = (best.label or best.answer) if task == "check" else best.answer
    return {"best_member": best.member_label, "best_member_model": best.model, "best_member_answer": said}


def build_verdict(
    *,
    run_id: str,
    task: str,
    member_panel: Panel,
    answers: list[MemberAnswer],
    failures: list[MemberFailure],
    clusters: list[ClaimCluster],
    label_vote: LabelVote | None,
    adjudication: Adjudication | None,
    reliability: dict[str, float],
    quality: dict[str, float],
    tags: dict[str, str] | None = None,
) -> tuple[Verdict, list[ClaimCluster]]:
    """Combine the vote and the ruling into the verdict; return it with the clusters' final statuses.
    ``tags``: the run's item tags, matched against the policy's ``review_tags``."""
    policy = member_panel.policy
    clusters = [k.model_copy(deep=True) for k in clusters]
    reasons, quorum_met = _degraded_reasons(member_panel, answers, failures, adjudication)
    ruling = adjudication.ruling if adjudication else None
    support, against = _support_and_against(clusters, *_apply_rulings(clusters, adjudication))
    support_set = set(support)
    cluster_of = {c: k for k in clusters for c in k.claim_ids}
    decision = _decide(task=task, policy=policy, answers=answers, label_vote=label_vote, adjudication=adjudication,
                       reliability=reliability, quality=quality, support_set=support_set, cluster_of=cluster_of,
                       reasons=reasons)
    agreement = _agreement(task, answers, decision, support_set)
    unresolved = [k.cluster_id for k in clusters if k.status == "unresolved"]
    flags = review_reasons(policy, contested=adjudication is not None or bool(unresolved), agreement=agreement,
                           confidence=decision.confidence, degraded_reasons=reasons, answers=answers,
                           support=support, tags=tags or {})
    verdict = Verdict(
        verdict_id=content_id(run_id, "verdict"),
        run_id=run_id,
        answer=decision.answer,
        label=decision.label,
        confidence=decision.confidence,
        agreement=agreement,
        support=support,
        contradicted=against,
        rationale=ruling.rationale if ruling else "",
        decided_by=decision.decided_by,
        adjudicator_call_id=adjudication.call_id if adjudication and ruling else None,
        members_total=len(member_panel.seats),
        members_answered=len(answers),
        quorum=policy.quorum,
        quorum_met=quorum_met,
        degraded=bool(reasons),
        degraded_reasons=reasons,
        failed_members=[
            FailedMember(member_label=f.member_label, model=f.model_requested, error_kind=f.error_kind, reason=f.reason)
            for f in failures
        ],
        needs_human_review=bool(flags),
        review_reasons=flags,
        clusters_total=len(clusters),
        settled_by_vote=[k.cluster_id for k in clusters if k.settled_by == "vote"],
        settled_by_adjudicator=[k.cluster_id for k in clusters if k.settled_by == "adjudicator"],
        unresolved=unresolved,
        vote_posterior=label_vote.posterior if label_vote else None,
        majority_answer=_majority(task, answers, cluster_of),
        **_best_member_fields(task, best_member(answers, reliability, quality, policy.reliability_prior)),
    )
    return verdict, clusters
