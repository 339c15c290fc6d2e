"""The adjudicator, asked only about what the weighted vote could not settle, and the verdict.

The adjudicator sees the members as anonymous labels (``Member 1``...) in an order shuffled per run, their
claims labelled ``C1``..., and the clusters to rule on labelled ``K1``... in order of appearance. Member text
is fenced as data inside tags carrying a per-run nonce, so text inside an answer or a source cannot close
the fence or pose as instructions; the ruling must parse as ``RulingDraft`` or it is retried, then the
next adjudicator model is tried, so injected text cannot change the verdict's format either.

Against text that tries to steer the ruling's *content* (``defences=True``, the default; the recipe's
``adjudication.injection_defences``): the adjudicator sees each member's atomic claims with their ids and
evidence, not its free answer text; each claim is cut to ``CLAIM_CHARS``; untrusted text is datamarked
(its words joined by ``DATAMARK``, so the model can tell data from instructions); a suspicious member's
text (``council.deliberation.injection``) is withheld, a placeholder in its place; and a ruling must cite
at least one claim (or a cluster it was asked about) that was shown, else ``build_verdict`` rejects it and
the vote decides, saying so. A fact check's label is never the adjudicator's alone to change silently:
when it differs from where the vote leaned the verdict records ``overruled_vote`` (and a settled vote's
label stands).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field

from council.calls.answers import FactLabel, MemberAnswer, MemberFailure
from council.calls.budget import Budget
from .clusters import ClaimCluster
from .flags import review_reasons
from .injection import SuspiciousMember, SuspiciousSource
from council.ids import content_id
from council.calls.members import CallContext, run_chain
from council.calls.ratelimit import RateLimiter
from council.calls.prompts import render, schema_text
from council.config.policy import TaskPolicy
from council.config.qualify import Panel
from council.calls.records import CallRecord
from .verdict import CheckRulingDraft, FailedMember, RulingDraft, Verdict, VoteOverrule
from .vote import LabelVote, best_member, majority_label

__all__ = ["Adjudication", "CLAIM_CHARS", "DATAMARK", "adjudicate_contested", "build_verdict", "datamark"]

CLAIM_CHARS = 300
"""The longest claim (or answer) text the adjudicator is shown; longer text is cut, marked ``[cut]``."""
DATAMARK = "ˆ"
"""Joins the words of untrusted text in the adjudicator's prompt (spotlighting by datamarking)."""


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
    withheld: list[str] = Field(default_factory=list)
    """Claim ids whose text was withheld from the adjudicator (their member was suspicious)."""
    defended: bool = False
    """The prompt had the injection defences (claims only, bounded, datamarked; citations required)."""


def _fence_safe(text: str) -> str:
    # Angle brackets cannot appear inside fenced data, so nothing in it can open or close a tag.
    return text.replace("<", "‹").replace(">", "›")


def datamark(text: str, limit: int = CLAIM_CHARS) -> str:
    """Untrusted text as the defended prompt shows it: fence-safe, cut to ``limit`` characters, its words
    joined by ``DATAMARK`` (the marker itself removed from the text first)."""
    words = _fence_safe(text.replace(DATAMARK, "^")).split()
    out = DATAMARK.join(words)
    return out if len(out) <= limit else out[:limit].rstrip(DATAMARK) + DATAMARK + "[cut]"


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
    suspicious: list[SuspiciousMember] | None = None,
    defences: bool = True,
) -> Adjudication:
    """Ask the adjudicator panel to rule on the contested clusters (and label); see the module docstring.

    ``review_notes`` (claim id -> a summary of peer reviewers' judgements) is shown beside each claim.
    ``suspicious``: members whose text is withheld (with ``defences``)."""
    flagged = {s.member_label: s for s in suspicious or []} if defences else {}
    withheld: list[str] = []
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
            if a.member_label in flagged:
                withheld.append(c.claim_id)
                rules = sorted({h.rule for h in flagged[a.member_label].hits})
                text = f"[withheld: this member's text was flagged as instructions ({', '.join(rules)})]"
            else:
                text = datamark(c.text) if defences else _fence_safe(c.text)
            view_claims.append({"label": lab, "text": text, "confidence": c.confidence, "evidence": evidence})
        if not defences:
            shown_answer = _fence_safe(a.answer)
        elif a.member_label in flagged:
            shown_answer = "[withheld]" if not a.claims else ""
        else:
            shown_answer = "" if a.claims else datamark(a.answer)  # claims stand for the answer
        members_view.append({
            "label": f"Member {i}", "answer": shown_answer, "label_given": a.label or "",
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
        defended=defences, marker=DATAMARK,
    )
    ctx = CallContext(run_id=request_id, node="adjudicate", member_label="adjudicator", policy=panel.policy,
                      prompt=prompt, sink=sink, budget=budget, first_attempt=first_attempt, on_send=on_send,
                      limiter=limiter)
    out = await run_chain(ctx, panel.seats[0].chain, schema)
    return Adjudication(ruling=out.value, call_id=out.call_id, error_kind=out.error_kind, reason=out.reason,
                        claim_labels=claim_labels, cluster_labels=cluster_labels, withheld=withheld,
                        defended=defences)


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


def _ruling_problem(adjudication: Adjudication | None) -> str | None:
    """Why a parsed ruling of a defended prompt cannot be used (None: it can): it must cite at least one
    claim that was shown (a withheld claim does not count as support) or a cluster it was asked about."""
    if adjudication is None or adjudication.ruling is None or not adjudication.defended:
        return None
    ruling = adjudication.ruling
    withheld = set(adjudication.withheld)
    shown = {lab for lab, cid in adjudication.claim_labels.items() if cid not in withheld}
    cited = [x for x in ruling.supported if x in shown] + [x for x in ruling.contradicted if x in adjudication.claim_labels]
    cited += [r.cluster for r in ruling.rulings if r.cluster in adjudication.cluster_labels]
    if cited:
        return None
    named = sorted(set(ruling.supported) | set(ruling.contradicted))
    if named:
        return f"the ruling cites no claim that was shown to it (it named {', '.join(named[:5])})"
    return "the ruling cites no claim of this run"


def _vote_decision(*, task: str, policy: TaskPolicy, answers: list[MemberAnswer], label_vote: LabelVote | None,
                   reliability: dict[str, float], quality: dict[str, float], support_set: set[str],
                   cluster_of: dict[str, ClaimCluster]) -> _Decision:
    """The weighted vote's verdict: for a fact check its label, said by the most reliable member that gave it."""
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


def _overrule(label_vote: LabelVote | None, ruling: RulingDraft) -> VoteOverrule | None:
    """The adjudicator's label against where the vote leaned (None when they agree or either is missing)."""
    if (label_vote is None or ruling.label is None or label_vote.label not in ("SUPPORTED", "REFUTED")
            or ruling.label == label_vote.label):
        return None
    return VoteOverrule(vote_label=label_vote.label, vote_posterior=label_vote.posterior,
                        vote_settled=label_vote.settled, ruling_label=ruling.label,
                        ruling_confidence=ruling.confidence, applied=not label_vote.settled)


def _decide(*, task: str, policy: TaskPolicy, answers: list[MemberAnswer], label_vote: LabelVote | None,
            adjudication: Adjudication | None, reliability: dict[str, float], quality: dict[str, float],
            support_set: set[str], cluster_of: dict[str, ClaimCluster], reasons: list[str]) -> _Decision:
    """Choose the answer, label and confidence: the adjudicator's ruling when there is one, else the
    weighted vote, else nothing. Appends to ``reasons`` why a verdict fell back to the vote or to nothing.

    For a fact check ``decided_by`` names who decided the *label*: a ruling with no label, or one whose
    label differs from a vote that settled it, leaves the label (and the confidence) to the vote."""
    ruling = adjudication.ruling if adjudication else None
    vote = functools.partial(_vote_decision, task=task, policy=policy, answers=answers, label_vote=label_vote,
                             reliability=reliability, quality=quality, support_set=support_set,
                             cluster_of=cluster_of)
    if ruling is not None:
        if task != "check":
            return _Decision(ruling.answer, None, ruling.confidence, "adjudicator")
        if ruling.label is None:
            if label_vote is None:
                return _Decision(ruling.answer, "NOT_ENOUGH_INFO", ruling.confidence, "adjudicator")
            reasons.append("the adjudicator gave no label: the label is the weighted vote's")
            return vote()
        if label_vote is not None and label_vote.settled:
            # The vote settled the label; the adjudicator was asked about clusters. Its answer is kept
            # only when it agrees with that label.
            if ruling.label == label_vote.label:
                return _Decision(ruling.answer, label_vote.label, label_vote.posterior, "vote")
            return vote()
        return _Decision(ruling.answer, ruling.label, ruling.confidence, "adjudicator")
    if not answers:
        reasons.append("no member answered")
        return _Decision("no verdict: " + "; ".join(reasons), "NOT_ENOUGH_INFO" if task == "check" else None,
                         0.0, "none")
    if adjudication is not None:
        reasons.append("verdict is the unsettled weighted vote")
    return vote()


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
    suspicious: list[SuspiciousMember] | None = None,
    suspicious_sources: list[SuspiciousSource] | None = None,
) -> tuple[Verdict, list[ClaimCluster]]:
    """Combine the vote and the ruling into the verdict; return it with the clusters' final statuses.
    ``tags``: the run's item tags, matched against the policy's ``review_tags``. ``suspicious`` and
    ``suspicious_sources``: what the injection rules flagged (recorded, and a review condition)."""
    policy = member_panel.policy
    clusters = [k.model_copy(deep=True) for k in clusters]
    rejected = _ruling_problem(adjudication)
    if rejected is not None and adjudication is not None:
        adjudication = adjudication.model_copy(update={"ruling": None, "error_kind": "ruling_rejected",
                                                       "reason": rejected})
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
    overrule = _overrule(label_vote, ruling) if task == "check" and ruling is not None else None
    overruled = None
    if overrule is not None:
        overruled = (f"adjudicator ruled {overrule.ruling_label} (confidence {overrule.ruling_confidence:.2f}) where the "
                     f"vote leaned {overrule.vote_label} (posterior {overrule.vote_posterior:.2f})"
                     + ("" if overrule.applied else "; the settled vote's label stands"))
    flagged = [f"member {m.member_label}: {', '.join(sorted({h.rule for h in m.hits}))}" for m in suspicious or []]
    flagged += [f"source passage {p.passage_id}: {', '.join(sorted({h.rule for h in p.hits}))}"
                for p in suspicious_sources or []]
    flags = review_reasons(policy, contested=adjudication is not None or bool(unresolved), agreement=agreement,
                           confidence=decision.confidence, degraded_reasons=reasons, answers=answers,
                           support=support, tags=tags or {}, overruled=overruled, suspicious=flagged)
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
        overruled_vote=overrule,
        ruling_rejected=rejected,
        suspicious_members=list(suspicious or []),
        suspicious_sources=list(suspicious_sources or []),
        vote_label=label_vote.label if label_vote else None,
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
