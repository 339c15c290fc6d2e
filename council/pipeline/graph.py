"""The deliberation graph, compiled from a recipe (graphs/council.toml) with LangGraph.

    plan ──Send×N──> member ──> reconcile ──(contested?)──> adjudicate ──> decide ──> record
                                    └──────────(settled)──────────────────┘

A recipe's optional stages slot in: ``review`` between the members and the vote, ``revise`` as a loop
(reconcile -> revise -> reconcile while something is contested, until convergence or the policy's
maximum), ``escalate`` between the vote and the adjudicator (see ``council.pipeline.stages``).

``plan`` qualifies the panels, reads the models' learned reliabilities, splits the sources into passages
and opens the run in the store (nothing is written before the request is known to be servable); one
``member`` node per panel seat runs in parallel through ``Send``, outcomes merged by an ``operator.add``
reducer; ``reconcile`` verifies citations, clusters equivalent claims and settles what the weighted vote
can; ``adjudicate`` runs only when something is contested; ``decide`` writes the verdict; ``record``
closes the run. State between nodes is typed: pydantic models in a TypedDict, no untyped dicts.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from pydantic import BaseModel

from council.calls.answers import AnswerDraft, MemberOutcome
from council.calls.budget import Budget
from council.calls.gateway import ImagePart, missing_key
from council.calls.members import CallContext, run_chain
from council.calls.ratelimit import RateLimiter
from council.calls.prompts import RenderedPrompt, render, schema_text
from council.calls.records import CallRecord
from council.config.catalog import ModelEntry
from council.config.policy import TaskPolicy
from council.config.qualify import Panel, RequestNeeds, estimate_tokens, qualify
from council.config.settings import CouncilConfig, Recipe
from council.deliberation.adjudication import Adjudication, adjudicate_contested, build_verdict
from council.deliberation.cascade import Escalation, label_in_doubt
from council.deliberation.review import Review
from council.deliberation.claims import build_answer, build_failure
from council.deliberation.embeddings import EmbeddingChoice, embed_for_clustering
from council.deliberation.reconcile import Reconciliation, reconcile as reconcile_answers, verified_answers
from council.deliberation.sources import Passage, Source, split_passages
from council.deliberation.revision import is_contested, revision_stop
from council.deliberation.verdict import Flip, Verdict
from council.errors import ConfigError
from council.store.db import Store
from .stages import escalate, plain_prompts, review, review_factors, review_notes, revise, stage_panels, with_stage_outcomes

if TYPE_CHECKING:  # langgraph is imported when the graph is built, not at module import (start-up speed)
    from langgraph.runtime import Runtime

__all__ = ["RunRequest", "RunPlan", "CouncilState", "GraphDeps", "MemberTask", "Reconciliation", "build_graph"]

_IMAGE_TOKENS = 1000  # a conservative flat estimate of what one attached image costs in prompt tokens


class RunRequest(BaseModel):
    """What the user asked, with the run's identity."""

    run_id: str
    task: Literal["ask", "check"]
    question: str
    image: ImagePart | None = None
    sources: list[Source] = []
    created_at: datetime
    resume: bool = False
    """Continue a run of this id that was interrupted or ran out of budget (see ``council.resume``):
    stored member outcomes are kept, new attempts are numbered after the recorded ones."""
    tags: dict[str, str] = {}
    """The item's tags (``risk=high``): stored with the run, matched by the policy's ``review_tags``."""


class RunPlan(BaseModel):
    """The panels chosen for the run, the prompts the members get, and what the vote will weigh."""

    member_panel: Panel
    adjudicator_panel: Panel | None
    """None when the recipe has no ``adjudicate`` stage."""
    review_policy: TaskPolicy | None = None
    """The reviewers' policy, when the recipe has a ``review`` stage."""
    revision_policy: TaskPolicy | None = None
    """The revisers' policy, when the recipe has a ``revise`` stage (its ``max_revision_rounds`` caps them)."""
    strong_panel: Panel | None = None
    """The cascade's strong tier, when the recipe has an ``escalate`` stage."""
    member_prompt: RenderedPrompt
    sentence_prompt: RenderedPrompt
    """For members that answer in one sentence."""
    completion_prompt: RenderedPrompt
    """For members that are base models in completion mode."""
    passages: list[Passage]
    reliability: dict[str, float]
    """Catalog name -> learned reliability, for the models of this run that have a history."""


class CouncilState(TypedDict, total=False):
    request: RunRequest
    plan: RunPlan
    outcomes: Annotated[list[MemberOutcome], operator.add]
    reviews: list[Review]
    round: int
    """The answer round the latest vote counted: 1 for the first answers, 2... after revision rounds."""
    round_changed: bool
    """Some member revised something in the latest revision round."""
    revision_stop: str | None
    """Why revision rounds stop (set by the vote when no further round runs; None: another round runs)."""
    flips: Annotated[list[Flip], operator.add]
    revision_missing: Annotated[list[str], operator.add]
    """One line per revision that failed (the member's previous answer stood)."""
    reconciliation: Reconciliation
    escalations: list[Escalation]
    adjudication: Adjudication
    verdict: Verdict


class MemberTask(TypedDict):
    """The payload one ``Send`` hands one member node."""

    request: RunRequest
    plan: RunPlan
    seat_index: int


@dataclass
class GraphDeps:
    """What the nodes need beyond the state: LangGraph's runtime context (``context_schema``), handed to
    every invocation as ``graph.ainvoke(state, context=deps)`` and read in the nodes as ``runtime.context``."""

    config: CouncilConfig
    catalog: list[ModelEntry]
    recipe: Recipe
    store: Store
    budget_usd: float | None = None
    embedding: EmbeddingChoice = field(default_factory=lambda: EmbeddingChoice(kind="lexical"))
    shared_budget: Budget | None = None
    """One budget every run of this graph draws from (a batch's), besides each run's ``budget_usd``."""
    write_ahead: bool = True
    """Write each call's ``pending`` record before sending it, so a crash mid-call loses no record."""
    limiter: RateLimiter | None = None
    """The rate limiter every call of this graph waits on before it is sent."""
    budgets: dict[str, Budget] = field(default_factory=dict)
    """Run id -> the budget of a run in progress (``budget_usd``), opened by ``plan``, dropped by ``record``."""

    def budget_of(self, run_id: str) -> Budget | None:
        """The budget a call of ``run_id`` draws from: the run's own, else the shared one (or none)."""
        return self.budgets.get(run_id) or self.shared_budget


def _deps(runtime: Runtime[GraphDeps]) -> GraphDeps:
    deps = runtime.context
    if deps is None:
        raise ConfigError("the council graph was invoked without its GraphDeps context (pass context=deps)")
    return deps


def _policy(deps: GraphDeps, name: str) -> TaskPolicy:
    if name not in deps.config.policies:
        raise ConfigError(f"recipe {deps.recipe.name!r} names unknown policy {name!r}")
    return deps.config.policies[name]


def _intent(deps: GraphDeps) -> Callable[[CallRecord], None] | None:
    return deps.store.add_call_intent if deps.write_ahead else None


async def plan(state: CouncilState, runtime: Runtime[GraphDeps]) -> CouncilState:
    """Qualify the panels, render the prompts, read reliabilities and open the run in the store."""
    deps = _deps(runtime)
    req, recipe = state["request"], deps.recipe
    task = recipe.tasks.get(req.task)
    if task is None:
        raise ConfigError(f"recipe {recipe.name!r} has no task {req.task!r}")
    member_policy = _policy(deps, task.member_policy)
    passages = split_passages(req.sources)
    prompt = render(
        task.member_template, task=req.task, question=req.question, passages=passages,
        evidence_required=member_policy.evidence_required, schema=schema_text(AnswerDraft),
    )
    plain_ctx = {"task": req.task, "question": req.question, "passages": passages}
    sentence_prompt = render(task.sentence_template, **plain_ctx)
    completion_prompt = render(task.completion_template, **plain_ctx)
    tokens = estimate_tokens(prompt.system + prompt.user) + (_IMAGE_TOKENS if req.image else 0)
    needs = RequestNeeds(capabilities=frozenset({"vision"}) if req.image else frozenset(), prompt_tokens=tokens)
    member_panel = qualify(deps.catalog, member_policy, needs)
    adj_policy = _policy(deps, recipe.adjudication.policy)
    adjudicator_panel = None
    if "adjudicate" in recipe.stages:
        # The adjudicator reads every member's claims: budget its prompt at what members may write.
        adj_tokens = estimate_tokens(req.question) + member_policy.panel_size * member_policy.max_output_tokens
        adjudicator_panel = qualify(
            deps.catalog, adj_policy, RequestNeeds(prompt_tokens=min(adj_tokens, adj_policy.context_budget_tokens))
        )
    review_policy, revision_policy, strong_panel = stage_panels(deps, req.question, member_panel)
    used = {e.name: e for p in (member_panel, adjudicator_panel, strong_panel) if p is not None
            for s in p.seats for e in s.chain}
    if deps.embedding.entry is not None:
        used[deps.embedding.entry.name] = deps.embedding.entry
    for entry in used.values():
        var = missing_key(entry)
        if var:
            raise ConfigError(f"model {entry.name!r} needs the API key env var {var}, which is not set")
    learned = deps.store.reliabilities(member_policy.reliability_prior, member_policy.reliability_prior_weight,
                                       task=req.task, min_feedback=member_policy.reliability_min_feedback)
    if req.resume:
        from council.store.resume import interrupt_pending, reset_derived

        interrupt_pending(deps.store, req.run_id)
        reset_derived(deps.store, req.run_id)
    deps.store.start_run(
        run_id=req.run_id, task=req.task, question=req.question, recipe=recipe.name,
        member_policy=member_policy, adjudication_policy=adj_policy,
        panel=[{"label": s.label, "chain": [e.name for e in s.chain]} for s in member_panel.seats]
        + [{"label": f"strong-{s.label}", "chain": [e.name for e in s.chain]} for s in (strong_panel.seats if strong_panel else [])]
        + [{"label": "adjudicator", "chain": [e.name for e in s.chain]}
           for s in (adjudicator_panel.seats if adjudicator_panel else [])],
        models=list(used.values()), created_at=req.created_at, sources=req.sources, passages=passages,
        tags=req.tags,
    )
    if deps.budget_usd is not None:
        deps.budgets[req.run_id] = Budget(deps.budget_usd, parent=deps.shared_budget)
    return {"plan": RunPlan(
        member_panel=member_panel, adjudicator_panel=adjudicator_panel, review_policy=review_policy,
        revision_policy=revision_policy, strong_panel=strong_panel, member_prompt=prompt,
        sentence_prompt=sentence_prompt, completion_prompt=completion_prompt, passages=passages,
        reliability={m: r.value for m, r in learned.items() if m in used},
    )}


async def fan_out(state: CouncilState) -> list:  # of Send (hints here are evaluated by langgraph)
    """One ``Send`` to ``member`` per seat of the member panel."""
    from langgraph.types import Send

    return [
        Send("member", MemberTask(request=state["request"], plan=state["plan"], seat_index=i))
        for i in range(len(state["plan"].member_panel.seats))
    ]


async def member(task: MemberTask, runtime: Runtime[GraphDeps]) -> CouncilState:
    """Ask one seat down its fallback chain; store and return its answer or failure."""
    deps = _deps(runtime)
    req, plan_ = task["request"], task["plan"]
    seat = plan_.member_panel.seats[task["seat_index"]]
    first = 1
    if req.resume:
        from council.store.resume import forget_failure, next_attempt, stored_outcome

        kept = stored_outcome(deps.store, req.run_id, seat.label)
        if kept is not None:
            return {"outcomes": [kept]}
        forget_failure(deps.store, req.run_id, seat.label)
        first = next_attempt(deps.store, req.run_id, "member", seat.label)
    ctx = CallContext(
        run_id=req.run_id, node="member", member_label=seat.label, policy=plan_.member_panel.policy,
        prompt=plan_.member_prompt, sink=deps.store.add_call, budget=deps.budget_of(req.run_id), image=req.image,
        first_attempt=first, on_send=_intent(deps), limiter=deps.limiter,
        plain=plain_prompts(req, plan_),
    )
    out = await run_chain(ctx, seat.chain, AnswerDraft)
    if out.value is None or out.model is None or out.call_id is None:
        failure = build_failure(run_id=req.run_id, member_label=seat.label, model_requested=seat.chain[0].name,
                                error_kind=out.error_kind, reason=out.reason, records=out.records,
                                raw_text=out.raw_text)
        deps.store.add_failure(failure)
        return {"outcomes": [MemberOutcome(member_label=seat.label, failure=failure)]}
    answer = build_answer(run_id=req.run_id, member_label=seat.label, model=out.model.name, call_id=out.call_id,
                          draft=out.value, task=req.task, raw_text=out.raw_text)
    deps.store.add_answer(answer)
    return {"outcomes": [MemberOutcome(member_label=seat.label, answer=answer)]}


async def reconcile(state: CouncilState, runtime: Runtime[GraphDeps]) -> CouncilState:
    """Verify citations, cluster the claims (embedding them may be a billed call) and settle by vote."""
    deps = _deps(runtime)
    req, plan_ = state["request"], state["plan"]
    member_policy = plan_.member_panel.policy
    answers, failures = verified_answers(state.get("outcomes", []), plan_.passages)
    embed_attempt = 1
    round_ = state.get("round", 1)
    if (req.resume or round_ > 1) and deps.embedding.kind == "litellm":
        from council.store.resume import next_attempt

        embed_attempt = next_attempt(deps.store, req.run_id, "cluster", "embedder")
    embedder = await embed_for_clustering(deps.embedding, [c for a in answers for c in a.claims], req.run_id,
                                          member_policy, deps.store.add_call, attempt=embed_attempt,
                                          on_send=_intent(deps), limiter=deps.limiter)
    factors = review_factors(deps, state.get("reviews", []), member_policy)
    rec = reconcile_answers(task=req.task, answers=answers, failures=failures, embedder=embedder,
                            reliability=plan_.reliability, policy=member_policy, sources_given=bool(plan_.passages),
                            claim_factors=factors, passages=plan_.passages,
                            detect_injection=deps.recipe.adjudication.injection_defences)
    deps.store.add_reconciliation(req.run_id, rec.answers, rec.clusters)
    if plan_.revision_policy is None:
        return {"reconciliation": rec}
    stop = revision_stop(round_, plan_.revision_policy.max_revision_rounds, is_contested(rec.clusters, rec.label_vote),
                         state.get("round_changed", True))
    return {"reconciliation": rec, "revision_stop": stop}


async def route(state: CouncilState) -> str:
    """After the vote (and any escalation): the adjudicator if something is still in doubt."""
    return "adjudicate" if state["reconciliation"].needs_adjudicator else "decide"


async def route_escalate(state: CouncilState) -> str:
    """After the vote in a cascade: escalate contested clusters or an unsettled label, else go on."""
    rec = state["reconciliation"]
    if is_contested(rec.clusters, rec.label_vote) or label_in_doubt(
            state["request"].task, rec.label_vote, state["plan"].member_panel.policy):
        return "escalate"
    return await route(state)


def another_round(state: CouncilState) -> bool:
    """After a vote in a recipe with revision rounds: another round runs unless the vote said why they stop."""
    return state.get("revision_stop") is None


async def adjudicate(state: CouncilState, runtime: Runtime[GraphDeps]) -> CouncilState:
    """Ask the adjudicator to rule on what the vote left contested."""
    from council.store.resume import next_attempt

    deps = _deps(runtime)
    recipe = deps.recipe
    req, plan_, rec = state["request"], state["plan"], state["reconciliation"]
    assert plan_.adjudicator_panel is not None  # the node exists only when the recipe has the stage
    result = await adjudicate_contested(
        request_id=req.run_id, task=req.task, question=req.question, rec_answers=rec.answers,
        clusters=rec.clusters, label_vote=rec.label_vote, panel=plan_.adjudicator_panel,
        template=recipe.adjudication.template, shuffle=recipe.adjudication.shuffle_members,
        sink=deps.store.add_call, budget=deps.budget_of(req.run_id),
        first_attempt=next_attempt(deps.store, req.run_id, "adjudicate", "adjudicator") if req.resume else 1,
        on_send=_intent(deps), review_notes=review_notes(state.get("reviews", [])), limiter=deps.limiter,
        suspicious=rec.suspicious, defences=recipe.adjudication.injection_defences,
    )
    return {"adjudication": result}


async def decide(state: CouncilState, runtime: Runtime[GraphDeps]) -> CouncilState:
    """Combine the vote and any ruling into the verdict."""
    deps = _deps(runtime)
    req, plan_, rec = state["request"], state["plan"], state["reconciliation"]
    verdict, clusters = build_verdict(
        run_id=req.run_id, task=req.task, member_panel=plan_.member_panel, answers=rec.answers,
        failures=rec.failures, clusters=rec.clusters, label_vote=rec.label_vote,
        adjudication=state.get("adjudication"), reliability=plan_.reliability,
        quality={e.name: e.quality for e in deps.catalog}, tags=req.tags,
        suspicious=rec.suspicious, suspicious_sources=rec.suspicious_sources,
    )
    verdict = with_stage_outcomes(verdict, state)
    # Only the clusters' final statuses are new here: reconcile already stored the claims.
    deps.store.add_reconciliation(req.run_id, [], clusters)
    return {"verdict": verdict}


async def record(state: CouncilState, runtime: Runtime[GraphDeps]) -> CouncilState:
    """Store the verdict and close the run."""
    deps = _deps(runtime)
    req = state["request"]
    verdict = state["verdict"]
    deps.store.finish_run(req.run_id, verdict, "degraded" if verdict.degraded else "done")
    deps.budgets.pop(req.run_id, None)
    return {}


def build_graph(deps: GraphDeps):  # -> CompiledStateGraph (langgraph is imported here, not at module import)
    """Compile ``deps.recipe`` into a LangGraph graph; invoke it with ``context=deps``.

    The nodes are the module-level functions above; they read their dependencies from LangGraph's runtime
    context (``runtime.context``, a ``GraphDeps``), so one compiled graph serves every run of a council.
    """
    from langgraph.graph import END, START, StateGraph

    recipe = deps.recipe
    # Every node and edge function is async: LangGraph runs sync ones in a thread pool, where their store
    # writes would contend with the event loop's for the database (and wait for a free thread).
    g = StateGraph(CouncilState, context_schema=GraphDeps)
    nodes: list[tuple[str, Callable[..., Any]]] = [("plan", plan), ("member", member)]
    if "review" in recipe.stages:
        nodes.append(("review", review))
    nodes.append(("reconcile", reconcile))
    if "revise" in recipe.stages:
        nodes.append(("revise", revise))
    if "escalate" in recipe.stages:
        nodes.append(("escalate", escalate))
    if "adjudicate" in recipe.stages:
        nodes.append(("adjudicate", adjudicate))
    nodes += [("decide", decide), ("record", record)]
    for name, fn in nodes:
        g.add_node(name, fn)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["member"])
    after_members = "review" if "review" in recipe.stages else "reconcile"
    g.add_edge("member", after_members)
    if after_members == "review":
        g.add_edge("review", "reconcile")
    # Without an adjudicate stage, what the vote leaves contested is decided unresolved.
    onward = {"adjudicate": "adjudicate" if "adjudicate" in recipe.stages else "decide", "decide": "decide"}
    after_vote: dict[str, str] = dict(onward)
    first_route = route
    if "escalate" in recipe.stages:
        after_vote["escalate"] = "escalate"
        first_route = route_escalate
        g.add_conditional_edges("escalate", route, onward)
    if "revise" in recipe.stages:
        # reconcile -> revise -> reconcile ... while the vote says another round runs; then on as usual.
        async def route_after_vote(state: CouncilState) -> str:
            return "revise" if another_round(state) else await first_route(state)

        g.add_conditional_edges("reconcile", route_after_vote, {"revise": "revise", **after_vote})
        g.add_edge("revise", "reconcile")
    else:
        g.add_conditional_edges("reconcile", first_route, after_vote)
    if "adjudicate" in recipe.stages:
        g.add_edge("adjudicate", "decide")
    g.add_edge("decide", "record")
    g.add_edge("record", END)
    return g.compile()
