"""The optional stages of a recipe as graph nodes: ``review`` (peer review), ``revise`` (revision rounds) and
``escalate`` (the cascade), plus what the stages add to the verdict.

The nodes read their dependencies from LangGraph's runtime context (``runtime.context``, a ``GraphDeps``),
like the nodes of ``council.pipeline.graph``; the deliberation itself is plain functions in
``council.deliberation.review``, ``council.deliberation.revision`` and ``council.deliberation.cascade``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any, NamedTuple

from council.calls.answers import MemberOutcome
from council.calls.members import PlainPrompts
from council.calls.prompts import render
from council.config.policy import TaskPolicy
from council.config.qualify import Panel, RequestNeeds, estimate_tokens, exclusion_reason, qualify
from council.deliberation.cascade import Escalation, StrongAnswer, apply_escalation, ask_strong_tier, escalation_items
from council.deliberation.reconcile import adjudication_need
from council.deliberation.review import Review, borda, claim_factors, review_answers
from council.deliberation.revision import RevisionOutcome, flips_between, revise_answer, revision_view
from council.deliberation.verdict import Verdict
from council.errors import ConfigError, QualificationError
from council.ids import content_id

if TYPE_CHECKING:
    from langgraph.runtime import Runtime

    from .graph import CouncilState, GraphDeps

__all__ = ["StagePolicies", "escalate", "plain_prompts", "review", "review_factors", "review_notes", "revise", "stage_panels",
           "with_stage_outcomes"]


def _deps(runtime: Runtime[GraphDeps]) -> GraphDeps:
    if runtime.context is None:
        raise ConfigError("the council graph was invoked without its GraphDeps context (pass context=deps)")
    return runtime.context


def _policy(deps: GraphDeps, stage: str, name: str) -> TaskPolicy:
    if name not in deps.config.policies:
        raise ConfigError(f"recipe {deps.recipe.name!r}: stage {stage!r} names policy {name!r}, which is neither "
                          "in graphs/policies.toml nor in the config's [policies]")
    return deps.config.policies[name]


class StagePolicies(NamedTuple):
    """The policies (and the cascade's strong panel) of a recipe's optional stages; None when absent."""

    review: TaskPolicy | None
    revision: TaskPolicy | None
    strong: Panel | None


def _need_two(recipe_name: str, stage: str, member_panel: Panel) -> None:
    if len(member_panel.seats) < 2:
        why = "; ".join(f"{n}: {r}" for n, r in member_panel.excluded.items()) or "no other model in the catalog"
        raise QualificationError(
            f"recipe {recipe_name!r} needs at least 2 members to {stage}, but only "
            f"{len(member_panel.seats)} qualified for policy {member_panel.policy.name!r} (the rest: {why})")


def stage_panels(deps: GraphDeps, question: str, member_panel: Panel) -> StagePolicies:
    """The review and revision policies and the cascade's strong panel the recipe needs; raise before
    anything is written when the recipe cannot run with this catalog."""
    recipe = deps.recipe
    review_policy = revision_policy = strong = None
    if recipe.review is not None and "review" in recipe.stages:
        review_policy = _policy(deps, "review", recipe.review.policy)
        _need_two(recipe.name, "review each other", member_panel)
    if recipe.revision is not None and "revise" in recipe.stages:
        revision_policy = _policy(deps, "revise", recipe.revision.policy)
        _need_two(recipe.name, "revise against each other", member_panel)
    if recipe.cascade is not None and "escalate" in recipe.stages:
        policy = _policy(deps, "escalate", recipe.cascade.policy)
        cheap = {s.chain[0].name for s in member_panel.seats}  # the cheap panel's first choices
        catalog = [e for e in deps.catalog if e.name not in cheap]
        if not catalog:
            raise QualificationError(f"recipe {recipe.name!r}: no model is left for the strong tier (policy "
                                     f"{policy.name!r}): every model of the catalog sits on the cheap panel")
        strong = qualify(catalog, policy, RequestNeeds(prompt_tokens=min(
            estimate_tokens(question) + 400, policy.context_budget_tokens)))
    return StagePolicies(review_policy, revision_policy, strong)


# --------------------------------------------------------------------------------------------- review

async def review(state: CouncilState, runtime: Runtime[GraphDeps]) -> CouncilState:
    """Every member that answered reviews the others' answers (its own is never sent), in parallel."""
    from council.store.deliberation import add_review, load_reviews

    deps = _deps(runtime)
    req, plan_ = state["request"], state["plan"]
    policy = plan_.review_policy
    assert policy is not None and deps.recipe.review is not None
    answers = sorted((o.answer for o in state.get("outcomes", []) if o.answer is not None), key=lambda a: a.member_label)
    kept = {r.reviewer_label: r for r in load_reviews(deps.store, req.run_id) if r.status == "ok"} if req.resume else {}
    by_name = {e.name: e for e in deps.catalog}

    async def one(a: Any) -> Review:
        if a.member_label in kept:
            return kept[a.member_label]
        entry = by_name[a.model]
        excluded = exclusion_reason(entry, policy, RequestNeeds())
        if excluded is not None:
            r = Review(review_id=content_id(req.run_id, "review", a.member_label), run_id=req.run_id,
                  reviewer_label=a.member_label, reviewer_model=a.model, shown=[], status="failed",
                  error_kind="not_qualified", reason=f"{a.model} does not qualify for policy {policy.name!r}: {excluded}")
        else:
            first = 1
            if req.resume:
                from council.store.resume import next_attempt

                first = next_attempt(deps.store, req.run_id, "review", a.member_label)
            r = await review_answers(
                run_id=req.run_id, task=req.task, question=req.question, reviewer=a, model=entry, answers=answers,
                policy=policy, template=deps.recipe.review.template, sources_given=bool(plan_.passages),
                sink=deps.store.add_call, budget=deps.budget_of(req.run_id), first_attempt=first,
                on_send=deps.store.add_call_intent if deps.write_ahead else None, limiter=deps.limiter)
        add_review(deps.store, r)
        return r

    reviews = list(await asyncio.gather(*(one(a) for a in answers))) if len(answers) > 1 else []
    return {"reviews": reviews}


def review_factors(deps: GraphDeps, reviews: list[Review], member_policy: TaskPolicy) -> dict[str, float] | None:
    """Claim id -> vote factor from the reviews (None without a review stage)."""
    ok = [r for r in reviews if r.status == "ok"]
    if not ok or deps.recipe.review is None:
        return None
    from council.store.deliberation import reviewer_reliabilities

    learned = reviewer_reliabilities(deps.store, member_policy.reliability_prior, member_policy.reliability_prior_weight)
    return claim_factors(ok, {m: r.value for m, r in learned.items()}, member_policy.reliability_prior,
                         deps.recipe.review.inaccurate_weight)


def review_notes(reviews: list[Review]) -> dict[str, str] | None:
    """Claim id -> ``reviews: 2 accurate, 1 inaccurate`` for the adjudicator's prompt."""
    counts: dict[str, dict[str, int]] = {}
    for r in reviews:
        for j in r.judgements:
            c = counts.setdefault(j.claim_id, {})
            c[j.verdict] = c.get(j.verdict, 0) + 1
    return {cid: "reviews: " + ", ".join(f"{n} {v}" for v, n in sorted(c.items())) for cid, c in counts.items()} or None


# --------------------------------------------------------------------------------------------- revise

async def revise(state: CouncilState, runtime: Runtime[GraphDeps]) -> CouncilState:
    """One revision round: every member that answered sees the council's claims (anonymous, counted) and
    revises or holds, in parallel; each new answer is stored before the next vote, linked to the one it
    revises. A member whose revision call fails keeps its answer (the run says which revision is missing)."""
    from council.store.deliberation import add_revision, stored_revision
    from council.store.resume import next_attempt

    deps = _deps(runtime)
    req, plan_, rec = state["request"], state["plan"], state["reconciliation"]
    policy = plan_.revision_policy
    assert policy is not None and deps.recipe.revision is not None
    round_ = state.get("round", 1) + 1
    notes = review_notes(state.get("reviews", []))
    by_name = {e.name: e for e in deps.catalog}

    async def one(a: Any) -> RevisionOutcome:
        if req.resume:
            kept = stored_revision(deps.store, req.run_id, a.member_label, round_)
            if kept is not None:  # stored again: the earlier vote's clusters this resumed run rebuilt go
                add_revision(deps.store, kept)
                return RevisionOutcome(member_label=a.member_label, answer=kept, flips=flips_between(a, kept))
        entry = by_name[a.model]
        excluded = exclusion_reason(entry, policy, RequestNeeds())
        if excluded is not None:
            return RevisionOutcome(member_label=a.member_label, error_kind="not_qualified",
                                   reason=f"{a.model} does not qualify for policy {policy.name!r}: {excluded}")
        view = revision_view(req.run_id, round_, a, rec.answers, rec.clusters, rec.label_vote, notes)
        out = await revise_answer(
            run_id=req.run_id, task=req.task, question=req.question, round_=round_, member=a, model=entry,
            view=view, policy=policy, template=deps.recipe.revision.template, sink=deps.store.add_call,
            budget=deps.budget_of(req.run_id), first_attempt=next_attempt(deps.store, req.run_id, "revise", a.member_label),
            on_send=deps.store.add_call_intent if deps.write_ahead else None, limiter=deps.limiter)
        if out.answer is not None:
            add_revision(deps.store, out.answer)
        return out

    outs = list(await asyncio.gather(*(one(a) for a in rec.answers)))
    missing = [f"revision by member {o.member_label} in round {round_} missing: {o.error_kind}" for o in outs
               if o.answer is None]
    return {"outcomes": [MemberOutcome(member_label=o.member_label, answer=o.answer) for o in outs if o.answer],
            "round": round_, "round_changed": any(o.changed for o in outs),
            "flips": [f for o in outs for f in o.flips], "revision_missing": missing}


# --------------------------------------------------------------------------------------------- cascade

def _stored_strong_answers(escalations: list[Escalation]) -> list[StrongAnswer]:
    """Strong models that already answered in an earlier attempt at this run (resume: not asked again)."""
    by_model: dict[str, StrongAnswer] = {}
    for e in escalations:
        for m, cid in e.call_of.items():
            a = by_model.setdefault(m, StrongAnswer(seat="", model=m, call_id=cid))
            if m in e.decisions:
                a.decisions[e.target] = e.decisions[m]
            if m in e.confidences:
                a.confidence = e.confidences[m]
    return list(by_model.values())


def plain_prompts(req: Any, plan_: Any) -> PlainPrompts:
    """The prompts a one-sentence (or token-probability) model gets for this request: a member's, and in a
    cascade a strong model's on a fact check (asked the claim as a member would be)."""
    return PlainPrompts(sentence=plan_.sentence_prompt, completion=plan_.completion_prompt, task=req.task,
                        question=req.question, render_own=functools.partial(
                            render, task=req.task, question=req.question, passages=plan_.passages))


async def escalate(state: CouncilState, runtime: Runtime[GraphDeps]) -> CouncilState:
    """Put each contested cluster (and an unsettled label) to the strong tier; count its answers in the vote."""
    from council.store.deliberation import add_escalations, load_escalations
    from council.store.resume import next_attempt

    deps = _deps(runtime)
    req, plan_, rec = state["request"], state["plan"], state["reconciliation"]
    panel, policy = plan_.strong_panel, plan_.member_panel.policy
    assert panel is not None and deps.recipe.cascade is not None
    items = escalation_items(req.task, rec.clusters, rec.label_vote, req.question, len(rec.answers), policy)
    answers = _stored_strong_answers(load_escalations(deps.store, req.run_id)) if req.resume else []
    done_models = {a.model for a in answers}
    clusters, label_vote, records = rec.clusters, rec.label_vote, []
    # One strong seat at a time, its answer stored before the next is asked: a process killed in between
    # resumes without asking (and paying) that seat again.
    def first_attempt(seat: str) -> int:
        return next_attempt(deps.store, req.run_id, "escalate", seat) if req.resume else 1

    for seat in [s for s in panel.seats if s.chain[0].name not in done_models] or [None]:
        if seat is not None:
            answers += await ask_strong_tier(
                run_id=req.run_id, task=req.task, question=req.question, items=items,
                panel=Panel(policy=panel.policy, seats=[seat], ranking=panel.ranking, excluded=panel.excluded),
                template=deps.recipe.cascade.template, sink=deps.store.add_call, budget=deps.budget_of(req.run_id),
                first_attempt=first_attempt,
                on_send=deps.store.add_call_intent if deps.write_ahead else None, limiter=deps.limiter,
                plain=plain_prompts(req, plan_) if req.task == "check" else None)
        clusters, label_vote, records = apply_escalation(
            run_id=req.run_id, items=items, answers=answers, clusters=rec.clusters, label_vote=rec.label_vote,
            reliability=plan_.reliability, policy=policy, strong_policy=panel.policy)
        add_escalations(deps.store, records)
    answered = len(rec.answers) + sum(1 for a in answers if a.call_id and "label" in a.decisions)
    needs, why = adjudication_need(req.task, rec.answers, clusters, label_vote, answered >= policy.quorum)
    if label_vote is not None and answered < policy.quorum:
        label_vote.settled, needs, why = False, True, "quorum not met, even with the strong tier"
    new = rec.model_copy(update={"clusters": clusters, "label_vote": label_vote, "needs_adjudicator": needs,
                                 "reason": why})
    deps.store.add_reconciliation(req.run_id, [], clusters)
    return {"reconciliation": new, "escalations": records}


# --------------------------------------------------------------------------------------------- verdict

def with_stage_outcomes(verdict: Verdict, state: CouncilState) -> Verdict:
    """The verdict with what the review, revise and escalate stages contributed (read from the run's state),
    and their failures as degradation."""
    reviews, escalations = state.get("reviews", []), state.get("escalations", [])
    reasons = list(verdict.degraded_reasons) + list(state.get("revision_missing", []))
    for r in reviews:
        if r.status == "failed":
            reasons.append(f"review by member {r.reviewer_label} ({r.reviewer_model}) missing: {r.error_kind}")
    for e in escalations:
        if e.status in ("failed", "skipped_budget"):
            what = e.cluster_label or "the label"
            reasons.append(f"escalation of {what} {'skipped: budget' if e.status == 'skipped_budget' else 'failed'}")
    return verdict.model_copy(update={
        "borda": borda([r for r in reviews if r.status == "ok"]),
        "escalated": [e.target for e in escalations],
        "settled_by_escalation": [e.target for e in escalations if e.status == "settled"],
        "rounds": state.get("round", 1), "revision_stop": state.get("revision_stop"),
        "flips": sorted(state.get("flips", []), key=lambda f: (f.round, f.member_label)),
        "degraded": verdict.degraded or len(reasons) > len(verdict.degraded_reasons),
        "degraded_reasons": reasons,
    })
