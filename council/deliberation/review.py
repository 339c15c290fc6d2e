"""Peer review: each member reviews the other members' answers, never its own.

Self-judging is impossible by construction: a reviewer's prompt is built from the other members' answers
only, so its own answer is never sent (and never paid for). The answers it sees are labelled ``Response 1``,
``Response 2``... in an order shuffled *per reviewer* (seeded by run and reviewer), so no position bias is
shared by every reviewer; claims are labelled ``C1``, ``C2``... in that order. Member text is fenced as data
inside tags carrying a per-run nonce, as for the adjudicator.

A review is structured (``ReviewDraft``): for each claim, ``accurate`` / ``inaccurate`` / ``unverifiable``
with a reason (and a quote when sources were given), plus a ranking of the responses, best first. Labels
are mapped back to claim ids and member labels before anything is stored.

Aggregation:
- rankings by normalized Borda: a reviewer ranking ``n`` responses gives the one at position ``i``
  (0 = best) ``(n - 1 - i) / (n - 1)`` points; a member's score is the mean over the reviewers that
  ranked it (so reviewers who saw different numbers of responses count alike);
- claim judgements by ``claim_factors``: a claim's factor is ``1 - w * (reliability-weighted share of its
  reviewers judging it inaccurate)``; the weighted vote moves the claim's effective accuracy that far
  toward chance (``settle_clusters(claim_factors=...)``). ``unverifiable`` judgements count as neither.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from council.calls.answers import MemberAnswer
from council.calls.budget import Budget
from council.calls.ratelimit import RateLimiter
from council.calls.members import CallContext, run_chain
from council.calls.prompts import render, schema_text
from council.calls.records import CallRecord
from council.config.catalog import ModelEntry
from council.config.policy import TaskPolicy
from council.ids import content_id

__all__ = [
    "ClaimJudgement", "ClaimJudgementDraft", "Review", "ReviewDraft", "ReviewView", "borda", "claim_factors",
    "review_answers", "review_view",
]

JudgementVerdict = Literal["accurate", "inaccurate", "unverifiable"]


class ClaimJudgementDraft(BaseModel):
    """A reviewer's judgement of one claim, as it states it (part of the structured output schema)."""

    model_config = ConfigDict(extra="ignore")

    claim: str
    """The claim's label in the prompt (``C1``...)."""
    verdict: JudgementVerdict
    """Whether the claim is accurate, inaccurate, or cannot be verified."""
    reason: str = ""
    """Why, in one sentence."""
    quote: str = ""
    """When sources were given: the exact words of a passage the judgement rests on."""


class ReviewDraft(BaseModel):
    """A reviewer's whole structured output."""

    model_config = ConfigDict(extra="ignore")

    judgements: list[ClaimJudgementDraft] = Field(default_factory=list)
    """One judgement per claim shown."""
    ranking: list[str] = Field(min_length=1)
    """The responses' labels (``Response 1``...) from best to worst."""


class ClaimJudgement(BaseModel):
    """A stored judgement: which reviewer judged which claim, how, and why."""

    claim_id: str
    verdict: JudgementVerdict
    reason: str = ""
    quote: str = ""


class Review(BaseModel):
    """One reviewer's review of the other members' answers, mapped back to records."""

    review_id: str
    """Content hash of run and reviewer."""
    run_id: str
    reviewer_label: str
    """The reviewing member's label (its own answer was not shown to it)."""
    reviewer_model: str
    """Catalog name of the model that reviewed (the one that served the member's answer)."""
    call_id: str | None = None
    """The call record of the successful review call; None when the review failed."""
    shown: list[str]
    """Member labels of the answers shown, in the (per-reviewer shuffled) order shown."""
    ranking: list[str] = Field(default_factory=list)
    """Member labels from best to worst, as the reviewer ranked them (unknown labels dropped)."""
    judgements: list[ClaimJudgement] = Field(default_factory=list)
    status: Literal["ok", "failed"] = "ok"
    error_kind: str | None = None
    reason: str | None = None
    """Why the review is missing, when it failed."""


class ReviewView(BaseModel):
    """What one reviewer is shown: the other answers in its own shuffled order, and the label maps."""

    reviewer_label: str
    shown: list[str]
    """Member labels, in the order shown (``Response 1`` first)."""
    response_labels: dict[str, str]
    """``Response N`` -> member label."""
    claim_labels: dict[str, str]
    """``CN`` -> claim id."""
    responses: list[dict[str, object]]
    """The template's view of each response: label, answer, label_given, claims (label, text, confidence)."""


def _fence_safe(text: str) -> str:
    return text.replace("<", "‹").replace(">", "›")


def review_view(run_id: str, reviewer_label: str, answers: list[MemberAnswer]) -> ReviewView:
    """The reviewer's view: every answer but its own, shuffled with a seed of (run, reviewer)."""
    others = sorted((a for a in answers if a.member_label != reviewer_label), key=lambda a: a.member_label)
    random.Random(f"{run_id}|review|{reviewer_label}").shuffle(others)
    response_labels: dict[str, str] = {}
    claim_labels: dict[str, str] = {}
    responses: list[dict[str, object]] = []
    for i, a in enumerate(others, start=1):
        rl = f"Response {i}"
        response_labels[rl] = a.member_label
        claims = []
        for c in a.claims:
            cl = f"C{len(claim_labels) + 1}"
            claim_labels[cl] = c.claim_id
            claims.append({"label": cl, "text": _fence_safe(c.text), "confidence": c.confidence})
        responses.append({"label": rl, "answer": _fence_safe(a.answer), "label_given": a.label or "",
                          "claims": claims})
    return ReviewView(reviewer_label=reviewer_label, shown=[a.member_label for a in others],
                      response_labels=response_labels, claim_labels=claim_labels, responses=responses)


async def review_answers(
    *,
    run_id: str,
    task: str,
    question: str,
    reviewer: MemberAnswer,
    model: ModelEntry,
    answers: list[MemberAnswer],
    policy: TaskPolicy,
    template: str,
    sources_given: bool,
    sink: Callable[[CallRecord], None],
    budget: Budget | None,
    first_attempt: int = 1,
    on_send: Callable[[CallRecord], None] | None = None,
    limiter: RateLimiter | None = None,
) -> Review:
    """One reviewer's call (its own answer is not in the prompt); a failed call gives a failed Review."""
    view = review_view(run_id, reviewer.member_label, answers)
    nonce = content_id(run_id, "fence")[:8]
    prompt = render(template, task=task, question=_fence_safe(question), responses=view.responses, nonce=nonce,
                    sources_given=sources_given, schema=schema_text(ReviewDraft))
    ctx = CallContext(run_id=run_id, node="review", member_label=reviewer.member_label, policy=policy,
                      prompt=prompt, sink=sink, budget=budget, first_attempt=first_attempt, on_send=on_send, limiter=limiter)
    out = await run_chain(ctx, [model], ReviewDraft)
    base = dict(review_id=content_id(run_id, "review", reviewer.member_label), run_id=run_id,
                reviewer_label=reviewer.member_label, reviewer_model=model.name, shown=view.shown)
    if out.value is None:
        return Review(**base, status="failed", error_kind=out.error_kind or "unknown", reason=out.reason)
    ranking: list[str] = []
    for lab in out.value.ranking:
        m = view.response_labels.get(lab.strip())
        if m is not None and m not in ranking:
            ranking.append(m)
    judged: dict[str, ClaimJudgement] = {}
    for j in out.value.judgements:
        cid = view.claim_labels.get(j.claim.strip())
        if cid is not None and cid not in judged:
            judged[cid] = ClaimJudgement(claim_id=cid, verdict=j.verdict, reason=j.reason, quote=j.quote)
    return Review(**base, call_id=out.call_id, ranking=ranking, judgements=list(judged.values()))


def borda(reviews: list[Review]) -> dict[str, float]:
    """Normalized Borda score of each ranked member (mean over the reviewers that ranked it), in [0, 1]."""
    points: dict[str, list[float]] = {}
    for r in reviews:
        n = len(r.ranking)
        for i, m in enumerate(r.ranking):
            points.setdefault(m, []).append(1.0 if n == 1 else (n - 1 - i) / (n - 1))
    return {m: sum(p) / len(p) for m, p in sorted(points.items())}


def claim_factors(reviews: list[Review], reviewer_reliability: dict[str, float], prior: float,
                  inaccurate_weight: float = 1.0) -> dict[str, float]:
    """Claim id -> factor in [0, 1] for the weighted vote (see the module docstring)."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for r in reviews:
        w = reviewer_reliability.get(r.reviewer_model, prior)
        for j in r.judgements:
            if j.verdict == "unverifiable":
                continue
            den[j.claim_id] = den.get(j.claim_id, 0.0) + w
            if j.verdict == "inaccurate":
                num[j.claim_id] = num.get(j.claim_id, 0.0) + w
    return {cid: 1.0 - inaccurate_weight * (num.get(cid, 0.0) / d) for cid, d in den.items() if d > 0}
