"""The deliberation graph, compiled from a recipe (graphs/council.toml) with LangGraph.

    plan ──Send×N──> member ──> reconcile ──(contested?)──> adjudicate ──> decide ──> record
                                    └──────────(settled)──────────────────┘

``plan`` qualifies the panels, reads the models' learned reliabilities, splits the sources into passages
and opens the run in the store (nothing is written before the request is known to be servable); one
``member`` node per panel seat runs in parallel through ``Send``, outcomes merged by an ``operator.add``
reducer; ``reconcile`` verifies citations, clusters equivalent claims and settles what the weighted vote
can; ``adjudicate`` runs only when something is contested; ``decide`` writes the verdict; ``record``
closes the run. State between nodes is typed: pydantic models in a TypedDict, no untyped dicts.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal, TypedDict

from pydantic import BaseModel

from council.deliberation.adjudication import Adjudication, adjudicate_contested, build_verdict
from council.calls.answers import AnswerDraft, Citation, Claim, MemberAnswer, MemberFailure, MemberOutcome
from council.calls.budget import Budget
from council.config.catalog import ModelEntry
from council.deliberation.clusters import ClaimCluster, cluster_claims
from council.config.settings import CouncilConfig, Recipe
from council.errors import ConfigError
from council.calls.gateway import ImagePart, missing_key
from council.ids import content_id
from council.calls.members import CallContext, PlainPrompts, run_chain
from council.calls.prompts import RenderedPrompt, render, schema_text
from council.config.qualify import Panel, RequestNeeds, estimate_tokens, qualify
from council.deliberation.embeddings import EmbeddingChoice, embed_for_clustering
from council.deliberation.sources import Passage, Source, split_passages, verify_quote
from council.store.db import Store
from council.deliberation.verdict import Verdict
from council.deliberation.vote import LabelVote, settle_clusters, vote_label

__all__ = ["RunRequest", "RunPlan", "CouncilState", "GraphDeps", "build_graph"]

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


class RunPlan(BaseModel):
    """The panels chosen for the run, the prompts the members get, and what the vote will weigh."""

    member_panel: Panel
    adjudicator_panel: Panel
    member_prompt: RenderedPrompt
    sentence_prompt: RenderedPrompt
    """For members that answer in one sentence."""
    completion_prompt: RenderedPrompt
    """For members that are base models in completion mode."""
    passages: list[Passage]
    reliability: dict[str, float]
    """Catalog name -> learned reliability, for the models of this run that have a history."""


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


class CouncilState(TypedDict, total=False):
    request: RunRequest
    plan: RunPlan
    outcomes: Annotated[list[MemberOutcome], operator.add]
    reconciliation: Reconciliation
    adjudication: Adjudication
    verdict: Verdict


class MemberTask(TypedDict):
    """The payload one ``Send`` hands one member node."""

    request: RunRequest
    plan: RunPlan
    seat_index: int


@dataclass
class GraphDeps:
    """What the nodes need beyond the state, bound when the graph is compiled."""

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


def build_graph(deps: GraphDeps):  # -> CompiledStateGraph (langgraph is imported here, not at module import)
    """Compile the recipe into a runnable LangGraph graph whose nodes close over ``deps``."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    recipe = deps.recipe
    policies = deps.config.policies
    budgets: dict[str, Budget] = {}
    intent = deps.store.add_call_intent if deps.write_ahead else None

    def budget_of(run_id: str) -> Budget | None:
        return budgets.get(run_id) or deps.shared_budget

    def policy(name: str):
        if name not in policies:
            raise ConfigError(f"recipe {recipe.name!r} names unknown policy {name!r}")
        return policies[name]

    async def plan(state: CouncilState) -> CouncilState:
        req = state["request"]
        task = recipe.tasks.get(req.task)
        if task is None:
            raise ConfigError(f"recipe {recipe.name!r} has no task {req.task!r}")
        member_policy = policy(task.member_policy)
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
        adj_policy = policy(recipe.adjudication.policy)
        # The adjudicator reads every member's claims: budget its prompt at what members may write.
        adj_tokens = estimate_tokens(req.question) + member_policy.panel_size * member_policy.max_output_tokens
        adjudicator_panel = qualify(
            deps.catalog, adj_policy, RequestNeeds(prompt_tokens=min(adj_tokens, adj_policy.context_budget_tokens))
        )
        used = {e.name: e for p in (member_panel, adjudicator_panel) for s in p.seats for e in s.chain}
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
            + [{"label": "adjudicator", "chain": [e.name for e in s.chain]} for s in adjudicator_panel.seats],
            models=list(used.values()), created_at=req.created_at, sources=req.sources, passages=passages,
        )
        if deps.budget_usd is not None:
            budgets[req.run_id] = Budget(deps.budget_usd, parent=deps.shared_budget)
        return {"plan": RunPlan(
            member_panel=member_panel, adjudicator_panel=adjudicator_panel, member_prompt=prompt,
            sentence_prompt=sentence_prompt, completion_prompt=completion_prompt, passages=passages,
            reliability={m: r.value for m, r in learned.items() if m in used},
        )}

    async def fan_out(state: CouncilState) -> list:  # of Send; hints here are evaluated by langgraph at runtime
        return [
            Send("member", MemberTask(request=state["request"], plan=state["plan"], seat_index=i))
            for i in range(len(state["plan"].member_panel.seats))
        ]

    async def member(task: MemberTask) -> CouncilState:
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
            prompt=plan_.member_prompt, sink=deps.store.add_call, budget=budget_of(req.run_id), image=req.image,
            first_attempt=first, on_send=intent,
            plain=PlainPrompts(sentence=plan_.sentence_prompt, completion=plan_.completion_prompt, task=req.task,
                               question=req.question, render_own=functools.partial(
                                   render, task=req.task, question=req.question, passages=plan_.passages)),
        )
        out = await run_chain(ctx, seat.chain, AnswerDraft)
        if out.value is None or out.model is None or out.call_id is None:
            failure = MemberFailure(
                run_id=req.run_id, member_label=seat.label, model_requested=seat.chain[0].name,
                error_kind=out.error_kind or "unknown", reason=out.reason or "no answer",
                call_ids=[r.call_id for r in out.records], raw_text=out.raw_text,
            )
            deps.store.add_failure(failure)
            return {"outcomes": [MemberOutcome(member_label=seat.label, failure=failure)]}
        answer_id = content_id(req.run_id, seat.label, out.call_id)
        claims: list[Claim] = []
        seen: set[str] = set()
        for draft in out.value.claims:
            text = " ".join(draft.text.split())
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            claims.append(Claim(
                claim_id=content_id(req.run_id, seat.label, text), run_id=req.run_id, answer_id=answer_id,
                member_label=seat.label, model=out.model.name, text=text, confidence=draft.confidence,
                citations=[Citation(**c.model_dump()) for c in draft.citations],
            ))
        answer = MemberAnswer(
            answer_id=answer_id, run_id=req.run_id, member_label=seat.label, model=out.model.name,
            call_id=out.call_id, answer=out.value.answer, label=out.value.label if req.task == "check" else None,
            confidence=out.value.confidence, claims=claims, raw_text=out.raw_text or "",
        )
        deps.store.add_answer(answer)
        return {"outcomes": [MemberOutcome(member_label=seat.label, answer=answer)]}

    async def reconcile(state: CouncilState) -> CouncilState:
        req, plan_ = state["request"], state["plan"]
        member_policy = plan_.member_panel.policy
        outcomes = sorted(state.get("outcomes", []), key=lambda o: o.member_label)
        failures = [o.failure for o in outcomes if o.failure is not None]
        passages = {p.passage_id: p for p in plan_.passages}
        answers: list[MemberAnswer] = []
        for o in outcomes:
            if o.answer is None:
                continue
            claims = [
                c.model_copy(update={"citations": [
                    x.model_copy(update={"verified": verify_quote(x.quote, passages.get(x.source_id)) if passages else None})
                    for x in c.citations
                ]})
                for c in o.answer.claims
            ]
            answers.append(o.answer.model_copy(update={"claims": claims}))
        all_claims = [c for a in answers for c in a.claims]
        embed_attempt = 1
        if req.resume and deps.embedding.kind == "litellm":
            from council.store.resume import next_attempt

            embed_attempt = next_attempt(deps.store, req.run_id, "cluster", "embedder")
        embedder = await embed_for_clustering(deps.embedding, all_claims, req.run_id, member_policy, deps.store.add_call,
                                              attempt=embed_attempt, on_send=intent)
        clusters = cluster_claims(all_claims, embedder)
        cluster_of = {cid: k.cluster_id for k in clusters for cid in k.claim_ids}
        answers = [a.model_copy(update={"claims": [c.model_copy(update={"cluster_id": cluster_of.get(c.claim_id)})
                                                    for c in a.claims]}) for a in answers]
        by_id = {c.claim_id: c for a in answers for c in a.claims}
        sources_given = bool(passages)
        settle_clusters(clusters, by_id, plan_.reliability, member_policy, sources_given)
        quorum_met = len(answers) >= member_policy.quorum
        label = vote_label(answers, plan_.reliability, member_policy, sources_given) if req.task == "check" and answers else None
        if label is not None and not quorum_met:
            label.settled = False
        contested = [k for k in clusters if k.status == "contested"]
        if not answers:
            needs, why = False, "no member answered"
        elif label is not None and not label.settled:
            needs, why = True, ("quorum not met" if not quorum_met else f"label vote not settled (posterior {label.posterior:.2f})")
        elif contested:
            needs, why = True, f"{len(contested)} contested cluster(s)"
        elif req.task == "ask" and len(answers) > 1 and not any(k.status == "accepted" for k in clusters):
            needs, why = True, "no claim was corroborated by a second member"
        else:
            needs, why = False, "settled by the weighted vote"
        deps.store.add_reconciliation(req.run_id, answers, clusters)
        return {"reconciliation": Reconciliation(
            answers=answers, failures=failures, clusters=clusters, label_vote=label, needs_adjudicator=needs, reason=why,
        )}

    async def route(state: CouncilState) -> str:
        return "adjudicate" if state["reconciliation"].needs_adjudicator else "decide"

    async def adjudicate(state: CouncilState) -> CouncilState:
        from council.store.resume import next_attempt

        req, plan_, rec = state["request"], state["plan"], state["reconciliation"]
        result = await adjudicate_contested(
            request_id=req.run_id, task=req.task, question=req.question, rec_answers=rec.answers,
            clusters=rec.clusters, label_vote=rec.label_vote, panel=plan_.adjudicator_panel,
            template=recipe.adjudication.template, shuffle=recipe.adjudication.shuffle_members,
            sink=deps.store.add_call, budget=budget_of(req.run_id),
            first_attempt=next_attempt(deps.store, req.run_id, "adjudicate", "adjudicator") if req.resume else 1,
            on_send=intent,
        )
        return {"adjudication": result}

    async def decide(state: CouncilState) -> CouncilState:
        req, plan_, rec = state["request"], state["plan"], state["reconciliation"]
        verdict, clusters = build_verdict(
            run_id=req.run_id, task=req.task, member_panel=plan_.member_panel, answers=rec.answers,
            failures=rec.failures, clusters=rec.clusters, label_vote=rec.label_vote,
            adjudication=state.get("adjudication"), reliability=plan_.reliability,
            quality={e.name: e.quality for e in deps.catalog},
        )
        # Only the clusters' final statuses are new here: reconcile already stored the claims.
        deps.store.add_reconciliation(req.run_id, [], clusters)
        return {"verdict": verdict}

    async def record(state: CouncilState) -> CouncilState:
        req = state["request"]
        verdict = state["verdict"]
        deps.store.finish_run(req.run_id, verdict, "degraded" if verdict.degraded else "done")
        budgets.pop(req.run_id, None)
        return {}

    # Every node and edge function is async: LangGraph runs sync ones in a thread pool, where their store
    # writes would contend with the event loop's for the database (and wait for a free thread).
    g = StateGraph(CouncilState)
    for name, fn in (("plan", plan), ("member", member), ("reconcile", reconcile), ("adjudicate", adjudicate),
                     ("decide", decide), ("record", record)):
        g.add_node(name, fn)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["member"])
    g.add_edge("member", "reconcile")
    g.add_conditional_edges("reconcile", route, ["adjudicate", "decide"])
    g.add_edge("adjudicate", "decide")
    g.add_edge("decide", "record")
    g.add_edge("record", END)
    return g.compile()
