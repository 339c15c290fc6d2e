"""The cascade: what the cheap panel's vote leaves in doubt goes, item by item, to a stronger tier.

Escalation is per contested cluster (or a fact check's unsettled label), never the whole question: settled
clusters keep the cheap members' answers. Each item carries the reason it was escalated (its posterior, how
many members stood on each side, a failed quorum). The strong tier (the ``escalate`` stage's policy, one
call per strong model, all items in one prompt labelled ``E1``...) says of each item whether its claim is
true, false or unsure (and, for a fact check, the label). Each strong answer then counts in the weighted
vote like a member's, with its model's reliability (``apply_escalation``); an item it settles is marked
``settled_by = "escalation"``, and what stays contested goes on to the adjudicator if the recipe has one.
A strong call the budget cannot cover is skipped (with its record) and the item stays as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from council.calls.answers import FactLabel
from council.calls.budget import Budget
from council.calls.ratelimit import RateLimiter
from council.calls.members import CallContext, PlainPrompts, run_chain
from council.calls.prompts import render, schema_text
from council.calls.records import CallRecord
from council.config.policy import TaskPolicy
from council.config.qualify import Panel
from council.ids import content_id
from .clusters import ClaimCluster
from .vote import LabelVote, effective_accuracy, weight

__all__ = ["Escalation", "EscalationDraft", "EscalationItem", "StrongAnswer", "apply_escalation",
           "ask_strong_tier", "escalation_items", "label_in_doubt"]


class EscalationItem(BaseModel):
    """One thing put to the strong tier."""

    item: str
    """``E1``, ``E2``... in the prompt."""
    target: str
    """The contested cluster's id, or ``label`` for a fact check's unsettled label."""
    text: str
    """The cluster's claim, or the claim being checked."""
    reason: str
    """Why it was escalated: posterior, disagreement, failed quorum."""


class ItemRulingDraft(BaseModel):
    model_config = ConfigDict(extra="ignore")

    item: str
    """The item's label (``E1``...)."""
    decision: Literal["true", "false", "unsure"]
    """Whether the item's claim is true, false, or cannot be decided."""
    reason: str = ""


class EscalationDraft(BaseModel):
    """A strong-tier model's structured output."""

    model_config = ConfigDict(extra="ignore")

    rulings: list[ItemRulingDraft] = Field(default_factory=list)
    """One ruling per item shown."""
    label: FactLabel | None = None
    """For a fact check whose label was escalated: SUPPORTED, REFUTED or NOT_ENOUGH_INFO."""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Your probability that that label is right."""


class StrongAnswer(BaseModel):
    """What one strong model said, mapped back to targets; or why it said nothing."""

    seat: str
    model: str
    call_id: str | None = None
    decisions: dict[str, str] = Field(default_factory=dict)
    """Target (cluster id or ``label``) -> ``true`` / ``false`` / ``unsure``, or the label given."""
    confidence: float | None = None
    """Its confidence in the label it gave (stated, or read from token probabilities and calibrated)."""
    error_kind: str | None = None
    reason: str | None = None


class Escalation(BaseModel):
    """A stored escalation decision and what came of it."""

    escalation_id: str
    run_id: str
    item: str
    target: str
    cluster_label: str | None = None
    """``K1``... for a cluster; None for the label."""
    text: str
    reason: str
    tier: str
    """The strong tier's policy (``name@version``)."""
    models: list[str] = Field(default_factory=list)
    """Strong models asked."""
    call_ids: list[str] = Field(default_factory=list)
    """Their successful calls."""
    call_of: dict[str, str] = Field(default_factory=dict)
    """Strong model -> the call that gave its decision."""
    decisions: dict[str, str] = Field(default_factory=dict)
    """Strong model -> its decision on this item."""
    confidences: dict[str, float] = Field(default_factory=dict)
    """Strong model -> its confidence in the label it gave (a label item only; weighs its vote)."""
    status: Literal["settled", "contested", "skipped_budget", "failed"]
    """``settled`` when the strong tier's votes settled it; ``skipped_budget`` when no strong call fit the
    budget; ``failed`` when every strong call failed; else ``contested`` (goes on to the adjudicator)."""
    outcome: str
    """The item's status afterwards: the cluster's status, or the label."""
    posterior_before: float
    posterior_after: float


def _sides(k: ClaimCluster, clusters: dict[str, ClaimCluster]) -> tuple[int, int]:
    con = {m for o in k.contradicts if o in clusters for m in clusters[o].member_labels} - set(k.member_labels)
    return len(k.member_labels), len(con)


def label_in_doubt(task: str, label_vote: LabelVote | None, policy: TaskPolicy) -> bool:
    """A fact check's label the strong tier should see: unsettled, or settled below the policy's
    ``escalate_label_below``."""
    if task != "check" or label_vote is None:
        return False
    return not label_vote.settled or (policy.escalate_label_below is not None
                                      and label_vote.posterior < policy.escalate_label_below)


def escalation_items(task: str, clusters: list[ClaimCluster], label_vote: LabelVote | None, question: str,
                     answered: int, policy: TaskPolicy) -> list[EscalationItem]:
    """The contested clusters and the label in doubt, each with the reason it is escalated."""
    quorum, settle_at = policy.quorum, policy.vote_settle_at
    by_id = {k.cluster_id: k for k in clusters}
    items: list[EscalationItem] = []
    for k in clusters:
        if k.status != "contested":
            continue
        pro, con = _sides(k, by_id)
        items.append(EscalationItem(
            item=f"E{len(items) + 1}", target=k.cluster_id, text=k.text,
            reason=(f"{k.label}: posterior {k.support:.2f} between {1 - settle_at:.2f} and {settle_at:.2f}; "
                    f"{pro} member(s) state it, {con} contradict it")))
    if label_in_doubt(task, label_vote, policy):
        assert label_vote is not None
        votes = f"(votes {dict(sorted(label_vote.votes.items()))})"
        if answered < quorum:
            why = f"quorum not met: {answered} of {quorum} required members answered"
        elif not label_vote.settled:
            why = f"label vote not settled: posterior {label_vote.posterior:.2f} < {settle_at:.2f} {votes}"
        else:
            why = (f"label vote settled in doubt: posterior {label_vote.posterior:.2f} < "
                   f"{policy.escalate_label_below:.2f} (the policy's escalate_label_below) {votes}")
        items.append(EscalationItem(item=f"E{len(items) + 1}", target="label", text=question, reason=why))
    return items


async def ask_strong_tier(
    *, run_id: str, task: str, question: str, items: list[EscalationItem], panel: Panel, template: str,
    sink: Callable[[CallRecord], None], budget: Budget | None,
    first_attempt: Callable[[str], int] = lambda _seat: 1,
    on_send: Callable[[CallRecord], None] | None = None,
    limiter: RateLimiter | None = None,
    plain: PlainPrompts | None = None,
) -> list[StrongAnswer]:
    """One call per strong seat, all items in one prompt; seats are asked in turn (the budget decides).

    ``plain`` (a fact check): models that answer in one sentence, or by token probabilities, may serve too;
    they are asked the claim as a member is, and give only the label (with their confidence). Without it
    (an open question) only structured models can rule on the items, and the others are left out of the
    chain."""
    nonce = content_id(run_id, "fence")[:8]
    view = [{"label": it.item, "text": it.text.replace("<", "‹").replace(">", "›"), "is_label": it.target == "label"}
            for it in items]
    prompt = render(template, task=task, question=question.replace("<", "‹").replace(">", "›"), items=view,
                    nonce=nonce, schema=schema_text(EscalationDraft))
    target_of = {it.item: it.target for it in items}
    out: list[StrongAnswer] = []
    for seat in panel.seats:
        label = f"strong-{seat.label}"
        chain = [e for e in seat.chain if plain is not None or e.answer_style == "structured"]
        if not chain:
            out.append(StrongAnswer(seat=label, model=seat.chain[0].name, error_kind="answer_style",
                                    reason="no model of the seat can rule on items (they answer in one sentence)"))
            continue
        ctx = CallContext(run_id=run_id, node="escalate", member_label=label, policy=panel.policy, prompt=prompt,
                          sink=sink, budget=budget, first_attempt=first_attempt(label), on_send=on_send,
                          limiter=limiter, plain=plain)
        res = await run_chain(ctx, chain, EscalationDraft)
        if res.value is None or res.model is None:
            out.append(StrongAnswer(seat=label, model=seat.chain[0].name, error_kind=res.error_kind or "unknown",
                                    reason=res.reason))
            continue
        decisions = {target_of[r.item.strip()]: r.decision for r in res.value.rulings if r.item.strip() in target_of}
        if "label" in target_of.values() and res.value.label is not None:
            decisions["label"] = res.value.label
        out.append(StrongAnswer(seat=label, model=res.model.name, call_id=res.call_id, decisions=decisions,
                                confidence=res.value.confidence if "label" in decisions else None))
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -50 else 0.0


def apply_escalation(
    *, run_id: str, items: list[EscalationItem], answers: list[StrongAnswer], clusters: list[ClaimCluster],
    label_vote: LabelVote | None, reliability: dict[str, float], policy: TaskPolicy, strong_policy: TaskPolicy,
) -> tuple[list[ClaimCluster], LabelVote | None, list[Escalation]]:
    """Count the strong answers in the weighted vote; return the updated clusters, label vote and records.

    ``policy`` (the members') settles; a strong model without a learned reliability counts with the strong
    tier's prior (``strong_policy.reliability_prior``): the policy says how far the tier is trusted."""
    tier = strong_policy.ref
    clusters = [k.model_copy(deep=True) for k in clusters]
    by_id = {k.cluster_id: k for k in clusters}
    label_vote = label_vote.model_copy(deep=True) if label_vote is not None else None
    ok = [a for a in answers if a.call_id is not None]
    records: list[Escalation] = []
    for it in items:
        # A label counts with the confidence its model gave it (as a member's does); a cluster ruling in full.
        w_of = {a.model: weight(effective_accuracy(reliability.get(a.model, strong_policy.reliability_prior),
                                                   a.confidence if it.target == "label" else None))
                for a in ok}
        decisions = {a.model: a.decisions[it.target] for a in ok if it.target in a.decisions}
        if it.target == "label":
            assert label_vote is not None
            before = label_vote.posterior
            for m, d in decisions.items():
                if d in ("SUPPORTED", "REFUTED"):
                    label_vote.log_odds_supported += w_of[m] if d == "SUPPORTED" else -w_of[m]
            if any(d in ("SUPPORTED", "REFUTED") for d in decisions.values()):
                p = _sigmoid(label_vote.log_odds_supported)
                label_vote.label = "SUPPORTED" if p >= 0.5 else "REFUTED"
                label_vote.posterior = max(p, 1.0 - p)
                label_vote.settled = label_vote.posterior >= policy.vote_settle_at
            settled, outcome, after, klabel = label_vote.settled, label_vote.label, label_vote.posterior, None
        else:
            k = by_id[it.target]
            before, klabel = k.support, k.label
            for m, d in decisions.items():
                if d == "true":
                    k.pro_weight += w_of[m]
                elif d == "false":
                    k.con_weight += w_of[m]
            k.support = _sigmoid(k.pro_weight - k.con_weight)
            if k.support >= policy.vote_settle_at:
                k.status, k.settled_by = "accepted", "escalation"
            elif k.support <= 1.0 - policy.vote_settle_at:
                k.status, k.settled_by = "rejected", "escalation"
            settled, outcome, after = k.status != "contested", k.status, k.support
        if settled:
            status = "settled"
        elif not ok and answers and all(a.error_kind == "budget" for a in answers):
            status = "skipped_budget"
        elif not ok:
            status = "failed"
        else:
            status = "contested"
        records.append(Escalation(
            escalation_id=content_id(run_id, "escalation", it.target), run_id=run_id, item=it.item,
            target=it.target, cluster_label=klabel, text=it.text, reason=it.reason, tier=tier,
            models=[a.model for a in answers], call_ids=[a.call_id for a in ok if a.call_id],
            call_of={a.model: a.call_id for a in ok if a.call_id},
            decisions=decisions, confidences={a.model: a.confidence for a in ok if a.confidence is not None
                                              and it.target == "label" and it.target in a.decisions},
            status=status, outcome=outcome, posterior_before=before, posterior_after=after))
    return clusters, label_vote, records
