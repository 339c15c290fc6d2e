"""The deliberation graph, compiled from a recipe (graphs/council.toml) with LangGraph.

    plan ──Send×N──> member ──> adjudicate ──> record

``plan`` qualifies the panels and opens the run in the store (nothing is written before the request is
known to be servable); one ``member`` node per panel seat runs in parallel through ``Send``, their outcomes
merged by an ``operator.add`` reducer; ``adjudicate`` reconciles the answers into a verdict; ``record``
closes the run. State between nodes is typed: pydantic models in a TypedDict, no untyped dicts.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, TypedDict

from pydantic import BaseModel

from .answers import AnswerDraft, Claim, MemberAnswer, MemberFailure, MemberOutcome
from .budget import Budget
from .catalog import ModelEntry
from .config import CouncilConfig, Recipe
from .errors import ConfigError
from .gateway import ImagePart, missing_key
from .members import CallContext, run_chain
from .prompts import RenderedPrompt, render
from .qualify import Panel, RequestNeeds, estimate_tokens, qualify
from .store import Store
from .verdict import FailedMember, RulingDraft, Verdict

__all__ = ["RunRequest", "RunPlan", "CouncilState", "GraphDeps", "build_graph"]

_IMAGE_TOKENS = 1000  # a conservative flat estimate of what one attached image costs in prompt tokens


class RunRequest(BaseModel):
    """What the user asked, with the run's identity."""

    run_id: str
    task: Literal["ask", "check"]
    question: str
    image: ImagePart | None = None
    created_at: datetime


class RunPlan(BaseModel):
    """The panels chosen for the run and the prompts the members get."""

    member_panel: Panel
    adjudicator_panel: Panel
    member_prompt: RenderedPrompt


class CouncilState(TypedDict, total=False):
    request: RunRequest
    plan: RunPlan
    outcomes: Annotated[list[MemberOutcome], operator.add]
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


def _hid(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _schema_text(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), separators=(",", ":"))


def build_graph(deps: GraphDeps):  # -> CompiledStateGraph (langgraph is imported here, not at module import)
    """Compile the recipe into a runnable LangGraph graph whose nodes close over ``deps``."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    recipe = deps.recipe
    policies = deps.config.policies
    budgets: dict[str, Budget] = {}

    def policy(name: str):
        if name not in policies:
            raise ConfigError(f"recipe {recipe.name!r} names unknown policy {name!r}")
        return policies[name]

    def plan(state: CouncilState) -> CouncilState:
        req = state["request"]
        task = recipe.tasks.get(req.task)
        if task is None:
            raise ConfigError(f"recipe {recipe.name!r} has no task {req.task!r}")
        member_policy = policy(task.member_policy)
        prompt = render(
            task.member_template, task=req.task, question=req.question, passages=[],
            evidence_required=member_policy.evidence_required, schema=_schema_text(AnswerDraft),
            model_system_prompt="",
        )
        tokens = estimate_tokens(prompt.system + prompt.user) + (_IMAGE_TOKENS if req.image else 0)
        needs = RequestNeeds(capabilities=frozenset({"vision"}) if req.image else frozenset(), prompt_tokens=tokens)
        member_panel = qualify(deps.catalog, member_policy, needs)
        adj_policy = policy(recipe.adjudication.policy)
        # The adjudicator reads every member's claims: budget its prompt at what members may write.
        adj_tokens = tokens + member_panel.policy.panel_size * member_policy.max_output_tokens
        adjudicator_panel = qualify(deps.catalog, adj_policy, RequestNeeds(prompt_tokens=min(adj_tokens, adj_policy.context_budget_tokens)))
        used = {e.name: e for p in (member_panel, adjudicator_panel) for s in p.seats for e in s.chain}
        for entry in used.values():
            var = missing_key(entry)
            if var:
                raise ConfigError(f"model {entry.name!r} needs the API key env var {var}, which is not set")
        deps.store.start_run(
            run_id=req.run_id, task=req.task, question=req.question, recipe=recipe.name,
            member_policy=member_policy, adjudication_policy=adj_policy,
            panel=[{"label": s.label, "chain": [e.name for e in s.chain]} for s in member_panel.seats]
            + [{"label": "adjudicator", "chain": [e.name for e in s.chain]} for s in adjudicator_panel.seats],
            models=list(used.values()), created_at=req.created_at,
        )
        if deps.budget_usd is not None:
            budgets[req.run_id] = Budget(deps.budget_usd)
        return {"plan": RunPlan(member_panel=member_panel, adjudicator_panel=adjudicator_panel, member_prompt=prompt)}

    def fan_out(state: CouncilState) -> list:  # of Send; hints here are evaluated by langgraph at runtime
        return [
            Send("member", MemberTask(request=state["request"], plan=state["plan"], seat_index=i))
            for i in range(len(state["plan"].member_panel.seats))
        ]

    async def member(task: MemberTask) -> CouncilState:
        req, plan_ = task["request"], task["plan"]
        seat = plan_.member_panel.seats[task["seat_index"]]
        ctx = CallContext(
            run_id=req.run_id, node="member", member_label=seat.label, policy=plan_.member_panel.policy,
            prompt=plan_.member_prompt, sink=deps.store.add_call, budget=budgets.get(req.run_id), image=req.image,
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
        answer_id = _hid(req.run_id, seat.label, out.call_id)
        claims: list[Claim] = []
        seen: set[str] = set()
        for draft in out.value.claims:
            text = " ".join(draft.text.split())
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            claims.append(
                Claim(
                    claim_id=_hid(req.run_id, seat.label, text), run_id=req.run_id, answer_id=answer_id,
                    member_label=seat.label, model=out.model.name, text=text, confidence=draft.confidence,
                    citations=draft.citations,
                )
            )
        answer = MemberAnswer(
            answer_id=answer_id, run_id=req.run_id, member_label=seat.label, model=out.model.name,
            call_id=out.call_id, answer=out.value.answer, label=out.value.label if req.task == "check" else None,
            claims=claims, raw_text=out.raw_text or "",
        )
        deps.store.add_answer(answer)
        return {"outcomes": [MemberOutcome(member_label=seat.label, answer=answer)]}

    async def adjudicate(state: CouncilState) -> CouncilState:
        req, plan_ = state["request"], state["plan"]
        outcomes = sorted(state.get("outcomes", []), key=lambda o: o.member_label)
        answers = [o.answer for o in outcomes if o.answer is not None]
        failures = [o.failure for o in outcomes if o.failure is not None]
        member_policy = plan_.member_panel.policy
        reasons = [f"member {f.member_label} ({f.model_requested}) failed: {f.error_kind}" for f in failures]
        if len(plan_.member_panel.seats) < member_policy.panel_size:
            reasons.append(f"only {len(plan_.member_panel.seats)} of {member_policy.panel_size} seats could be filled")
        quorum_met = len(answers) >= member_policy.quorum
        if not quorum_met:
            reasons.append(f"quorum not met: {len(answers)} of {member_policy.quorum} required members answered")
        ruling: RulingDraft | None = None
        adj_call: str | None = None
        labels: dict[str, str] = {}
        if answers:
            order = list(answers)
            if recipe.adjudication.shuffle_members:
                random.Random(req.run_id).shuffle(order)
            members_view, n = [], 0
            for i, a in enumerate(order, start=1):
                view_claims = []
                for c in a.claims:
                    n += 1
                    labels[f"C{n}"] = c.claim_id
                    view_claims.append({"label": f"C{n}", "text": c.text, "confidence": c.confidence})
                members_view.append({"label": f"Member {i}", "answer": a.answer, "label_given": a.label or "", "claims": view_claims})
            prompt = render(
                recipe.adjudication.template, task=req.task, question=req.question, members=members_view,
                schema=_schema_text(RulingDraft),
            )
            seat = plan_.adjudicator_panel.seats[0]
            ctx = CallContext(
                run_id=req.run_id, node="adjudicate", member_label="adjudicator",
                policy=plan_.adjudicator_panel.policy, prompt=prompt, sink=deps.store.add_call,
                budget=budgets.get(req.run_id),
            )
            out = await run_chain(ctx, seat.chain, RulingDraft)
            ruling, adj_call = out.value, out.call_id
            if ruling is None:
                reasons.append(f"adjudicator failed: {out.error_kind} ({out.reason})")
        else:
            reasons.append("no member answered")
        support = [labels[x] for x in (ruling.supported if ruling else []) if x in labels]
        contradicted = [labels[x] for x in (ruling.contradicted if ruling else []) if x in labels]
        supporters = {c.member_label for a in answers for c in a.claims if c.claim_id in set(support)}
        agreement = len(supporters) / len(answers) if answers and ruling else 0.0
        review = member_policy.human_review == "always" or (
            member_policy.human_review == "when_contested" and (agreement < 1.0 or bool(reasons))
        )
        verdict = Verdict(
            verdict_id=_hid(req.run_id, "verdict"),
            run_id=req.run_id,
            answer=ruling.answer if ruling else "no verdict: " + "; ".join(reasons),
            label=(ruling.label or "NOT_ENOUGH_INFO") if (req.task == "check" and ruling) else ("NOT_ENOUGH_INFO" if req.task == "check" else None),
            confidence=ruling.confidence if ruling else 0.0,
            agreement=agreement,
            support=support,
            contradicted=contradicted,
            rationale=ruling.rationale if ruling else "",
            decided_by="adjudicator" if ruling else "none",
            adjudicator_call_id=adj_call,
            members_total=len(plan_.member_panel.seats),
            members_answered=len(answers),
            quorum=member_policy.quorum,
            quorum_met=quorum_met,
            degraded=bool(reasons),
            degraded_reasons=reasons,
            failed_members=[
                FailedMember(member_label=f.member_label, model=f.model_requested, error_kind=f.error_kind, reason=f.reason)
                for f in failures
            ],
            needs_human_review=review,
        )
        return {"verdict": verdict}

    def record(state: CouncilState) -> CouncilState:
        req = state["request"]
        verdict = state["verdict"]
        deps.store.finish_run(req.run_id, verdict, "degraded" if verdict.degraded else "done")
        budgets.pop(req.run_id, None)
        return {}

    g = StateGraph(CouncilState)
    g.add_node("plan", plan)
    g.add_node("member", member)
    g.add_node("adjudicate", adjudicate)
    g.add_node("record", record)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["member"])
    g.add_edge("member", "adjudicate")
    g.add_edge("adjudicate", "record")
    g.add_edge("record", END)
    return g.compile()
