"""Revision rounds: while the vote leaves something contested, members revise or hold their answers.

Only when the weighted vote leaves a cluster contested (or a fact check's label unsettled) does a round run.
Each member that answered is shown its own answer and what the council said, anonymously and counted per
cluster of equivalent claims ("2 of 3 members state: ..."), with the label votes of a fact check and the
peer reviews' judgements when the recipe has a review stage; it replies ``revise`` (with a new answer) or
``hold`` (its answer stands), with a reason. Member text is fenced as data inside tags carrying a per-run
nonce, as for reviewers and the adjudicator.

A revised (or held) answer is a new answer of round 2, 3...; it links to the answer it revises
(``revised_from``), and every label or claim that changed between the two is a ``Flip``: a label that
flipped, a claim retracted or newly stated. Herding (a right answer flipped to a wrong one) is then
measured from the stored flips, not guessed.

Rounds stop (``revision_stop``) at convergence (nothing contested any more, or every member held) or at the
revision policy's ``max_revision_rounds``. A reviser whose call fails keeps its previous answer; the run says
which revision is missing (degraded), it never crashes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from council.calls.answers import AnswerDraft, ClaimDraft, FactLabel, MemberAnswer, require_alnum
from council.calls.budget import Budget
from council.calls.members import CallContext, run_chain
from council.calls.prompts import render, schema_text
from council.calls.ratelimit import RateLimiter
from council.calls.records import CallRecord
from council.config.catalog import ModelEntry
from council.config.policy import TaskPolicy
from council.ids import content_id
from .claims import build_answer, normalize_claim_text
from .clusters import ClaimCluster
from .verdict import Flip
from .vote import LabelVote

__all__ = ["RevisionDraft", "RevisionOutcome", "flips_between", "is_contested", "revise_answer", "revision_stop",
           "revision_view"]


class RevisionDraft(BaseModel):
    """A member's structured reply in a revision round (the ``response_format`` schema)."""

    model_config = ConfigDict(extra="ignore")

    # ``decision`` first: a grammar-constrained model decides before it writes anything else.
    decision: Literal["revise", "hold"]
    """``hold`` keeps your previous answer as it is; ``revise`` replaces it with the answer below."""
    reason: str = ""
    """Why you revise or hold, in one or two sentences."""
    answer: str | None = None
    """With ``revise``: your new direct answer, in one or two sentences."""
    label: FactLabel | None = None
    """With ``revise``, for a fact check: your new label."""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """With ``revise``: your probability that the new answer (or label) is right."""
    claims: list[ClaimDraft] = Field(default_factory=list)
    """With ``revise``: the factual claims your new answer rests on."""

    @model_validator(mode="after")
    def _revision_is_complete(self) -> RevisionDraft:
        if self.decision == "revise":
            if self.answer is None or not self.claims:
                raise ValueError("a revision needs a new answer and at least one claim (or decide 'hold')")
            require_alnum(self.answer)
        return self


class RevisionOutcome(BaseModel):
    """What one member's revision call gave: its answer of this round, or why it has none."""

    member_label: str
    answer: MemberAnswer | None = None
    """The revised (or held) answer of this round; None when the call failed (the previous answer stands)."""
    flips: list[Flip] = Field(default_factory=list)
    error_kind: str | None = None
    reason: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.flips)


def is_contested(clusters: list[ClaimCluster], label_vote: LabelVote | None) -> bool:
    """True when the vote left a cluster contested or a fact check's label unsettled."""
    return any(k.status == "contested" for k in clusters) or (label_vote is not None and not label_vote.settled)


def revision_stop(round_: int, max_rounds: int, contested: bool, changed: bool) -> str | None:
    """Why revision stops after the vote on the answers of ``round_`` (1 = the first answers), or None
    when another round runs. ``changed``: some member revised something in ``round_``."""
    done = round_ - 1
    if not contested:
        return ("not needed: the vote left nothing contested" if done == 0
                else f"converged: nothing contested after {done} revision round(s)")
    if done >= 1 and not changed:
        return f"converged: every member held its answer in round {round_}"
    if done >= max_rounds:
        return f"stopped at the policy's maximum of {max_rounds} revision round(s), still contested"
    return None


def _fence_safe(text: str) -> str:
    return text.replace("<", "‹").replace(">", "›")


def revision_view(
    run_id: str, round_: int, member: MemberAnswer, answers: list[MemberAnswer], clusters: list[ClaimCluster],
    label_vote: LabelVote | None, review_notes: dict[str, str] | None = None,
) -> dict[str, object]:
    """What one member is shown: its own answer, and the council's claims counted per cluster (no member
    labels or models), in an order shuffled per (run, round, member); for a fact check the label votes."""
    n = len(answers)
    rows = []
    for k in clusters:
        note = ""
        if review_notes:
            counts = [review_notes[c] for c in k.claim_ids if c in review_notes]
            note = "; ".join(counts)
        rows.append({
            "count": len(k.member_labels), "text": _fence_safe(k.text), "yours": member.member_label in k.member_labels,
            "contested": k.status == "contested", "contradicted": bool(k.contradicts), "reviews": note,
        })
    random.Random(f"{run_id}|revise|{round_}|{member.member_label}").shuffle(rows)
    labels: list[dict[str, object]] = []
    if label_vote is not None:
        tally: dict[str, int] = {}
        for lab in label_vote.votes.values():
            tally[lab] = tally.get(lab, 0) + 1
        labels = [{"label": lab, "count": c} for lab, c in sorted(tally.items(), key=lambda x: (-x[1], x[0]))]
    return {
        "members": n,
        "own": {"answer": _fence_safe(member.answer), "label": member.label or "",
                "claims": [{"text": _fence_safe(c.text), "confidence": c.confidence} for c in member.claims]},
        "clusters": rows,
        "labels": labels,
    }


def flips_between(before: MemberAnswer, after: MemberAnswer) -> list[Flip]:
    """Every label or claim that changed from ``before`` to ``after`` (the same member, the next round)."""
    base = dict(run_id=after.run_id, round=after.round, member_label=after.member_label, model=after.model,
                answer_id=after.answer_id, revised_from=before.answer_id)
    out: list[Flip] = []
    if before.label != after.label:
        out.append(Flip(**base, kind="label", subject="label", before=before.label or "none",
                        after=after.label or "none"))
    old = {normalize_claim_text(c.text).lower(): c.text for c in before.claims}
    new = {normalize_claim_text(c.text).lower(): c.text for c in after.claims}
    out += [Flip(**base, kind="claim", subject=text, before="stated", after="retracted")
            for key, text in old.items() if key not in new]
    out += [Flip(**base, kind="claim", subject=text, before="absent", after="stated")
            for key, text in new.items() if key not in old]
    return out


def _held(previous: MemberAnswer) -> AnswerDraft:
    return AnswerDraft(answer=previous.answer, label=previous.label, confidence=previous.confidence,
                       claims=[ClaimDraft(text=c.text, confidence=c.confidence,
                                          citations=[x.model_dump(include={"source_id", "quote"}) for x in c.citations])
                               for c in previous.claims])


async def revise_answer(
    *,
    run_id: str,
    task: str,
    question: str,
    round_: int,
    member: MemberAnswer,
    model: ModelEntry,
    view: dict[str, object],
    policy: TaskPolicy,
    template: str,
    sink: Callable[[CallRecord], None],
    budget: Budget | None,
    first_attempt: int = 1,
    on_send: Callable[[CallRecord], None] | None = None,
    limiter: RateLimiter | None = None,
) -> RevisionOutcome:
    """One member's revision call (node ``revise``) on the model that gave its answer; a failed call leaves
    its previous answer in force."""
    nonce = content_id(run_id, "fence")[:8]
    prompt = render(template, task=task, question=_fence_safe(question), round=round_, nonce=nonce,
                    schema=schema_text(RevisionDraft), **view)
    ctx = CallContext(run_id=run_id, node="revise", member_label=member.member_label, policy=policy, prompt=prompt,
                      sink=sink, budget=budget, first_attempt=first_attempt, on_send=on_send, limiter=limiter)
    out = await run_chain(ctx, [model], RevisionDraft)
    if out.value is None or out.call_id is None:
        return RevisionOutcome(member_label=member.member_label, error_kind=out.error_kind or "unknown",
                               reason=out.reason)
    d = out.value
    draft = _held(member) if d.decision == "hold" else AnswerDraft(
        answer=d.answer or "", label=d.label, confidence=d.confidence, claims=d.claims)
    answer = build_answer(run_id=run_id, member_label=member.member_label, model=model.name, call_id=out.call_id,
                          draft=draft, task=task, raw_text=out.raw_text, round_=round_)
    answer = answer.model_copy(update={"revised_from": member.answer_id, "revision": d.decision,
                                       "revision_reason": d.reason})
    return RevisionOutcome(member_label=member.member_label, answer=answer, flips=flips_between(member, answer))
