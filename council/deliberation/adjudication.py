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

from pydantic import BaseModel, Field

from council.calls.answers import MemberAnswer, MemberFailure
from council.calls.budget import Budget
from .clusters import ClaimCluster
from .flags import review_reasons
from council.ids import content_id
from council.calls.members import CallContext, run_chain
from council.calls.ratelimit import RateLimiter
from council.calls.prompts import render, schema_text
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
    by_id = {k.cluster_id: k for k in clusters}
    reasons = [f"member {f.member_label} ({f.model_requested}) failed: {f.error_kind}" for f in failures]
    if len(member_panel.seats) < policy.panel_size:
        reasons.append(f"only {len(member_panel.seats)} of {policy.panel_size} seats could be filled")
    quorum_met = len(answers) >= policy.quorum
    if not quorum_met:
        reasons.append(f"quorum not met: {len(answers)} of {policy.quorum} required members answered")
    ruling = adjudication.ruling if adjudication else None
    if adjudication is not None and ruling is None:
        reasons.append(f"adjudicator failed: {adjudication.error_kind} ({adjudication.reason})")
    extra_support: list[str] = []
    extra_against: list[str] = []
    if adjudication is not None:
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
    support = [c for k in clusters if k.status == "accepted" for c in k.claim_ids]
    support += [c for c in extra_support if c not in support]
    against = [c for k in clusters if k.status == "rejected" for c in k.claim_ids]
    against += [c for c in extra_against if c not in against and c not in support]
    support_set = set(support)
    cluster_of = {c: k for k in clusters for c in k.claim_ids}
    best = best_member(answers, reliability, quality, policy.reliability_prior)

    def backing(a: MemberAnswer) -> float:
        return sum(cluster_of[c.claim_id].support for c in a.claims if c.claim_id in support_set and c.claim_id in cluster_of)

    label = None
    if ruling is not None:
        answer_text, confidence, decided_by = ruling.answer, ruling.confidence, "adjudicator"
        if task == "check":
            label = ruling.label or (label_vote.label if label_vote else "NOT_ENOUGH_INFO")
    elif answers:
        decided_by = "vote"
        if task == "check" and label_vote is not None:
            label, confidence = label_vote.label, label_vote.posterior
            aligned = [a for a in answers if a.label == label] or answers
            chosen_one = best_member(aligned, reliability, quality, policy.reliability_prior)
            assert chosen_one is not None
            answer_text = chosen_one.answer
        else:
            chosen = max(answers, key=lambda a: (backing(a), reliability.get(a.model, policy.reliability_prior)))
            answer_text = chosen.answer
            mine = [cluster_of[c.claim_id].support for c in chosen.claims if c.claim_id in support_set and c.claim_id in cluster_of]
            confidence = sum(mine) / len(mine) if mine else 0.0
        if adjudication is not None:
            reasons.append("verdict is the unsettled weighted vote")
    else:
        decided_by, confidence = "none", 0.0
        reasons.append("no member answered")
        answer_text = "no verdict: " + "; ".join(reasons)
        if task == "check":
            label = "NOT_ENOUGH_INFO"
    if task == "check" and label is not None and answers:
        agreement = sum(1 for a in answers if a.label == label) / len(answers)
    else:
        supporters = {c.member_label for a in answers for c in a.claims if c.claim_id in support_set}
        agreement = len(supporters) / len(answers) if answers and decided_by != "none" else 0.0
    if task == "check":
        majority = majority_label(answers)
    else:
        def corroboration(a: MemberAnswer) -> int:
            return sum(len(cluster_of[c.claim_id].member_labels) for c in a.claims if c.claim_id in cluster_of)
        majority = max(answers, key=lambda a: (corroboration(a), a.member_label)).answer if answers else None
    unresolved = [k.cluster_id for k in clusters if k.status == "unresolved"]
    contested_any = adjudication is not None or bool(unresolved)
    flags = review_reasons(policy, contested=contested_any, agreement=agreement, confidence=confidence,
                           degraded_reasons=reasons, answers=answers, support=support, tags=tags or {})
    verdict = Verdict(
        verdict_id=content_id(run_id, "verdict"),
        run_id=run_id,
        answer=answer_text,
        label=label,
        confidence=confidence,
        agreement=agreement,
        support=support,
        contradicted=against,
        rationale=ruling.rationale if ruling else "",
        decided_by=decided_by,  # type: ignore[arg-type]
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
        majority_answer=majority,
        best_member=best.member_label if best else None,
        best_member_model=best.model if best else None,
        best_member_answer=(best.label or best.answer) if best and task == "check" else (best.answer if best else None),
    )
    return verdict, clusters
