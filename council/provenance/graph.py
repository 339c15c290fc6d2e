"""The provenance graph of a run, rebuilt from the store as a networkx MultiDiGraph.

Nodes carry ``kind`` (Run, Policy, Model, Call, Answer, Claim, Cluster, Source, Passage, Failure, Verdict,
ReviewDecision, Person) and their record's fields;
node ids are ``kind:id`` (``claim:ab12...``). Edges carry ``relation`` (also the multigraph key):

    Run -used-> Policy                 Call -governed_by-> Policy     Call -used-> Model
    Call -part_of-> Run                Answer -generated_by-> Call    Claim -stated_in-> Answer
    Failure -attempted_by-> Call       Verdict -supported_by-> Claim  Verdict -contradicted_by-> Claim
    Verdict -generated_by-> Call       Verdict -noted-> Failure       Verdict -part_of-> Run
    Claim -member_of-> Cluster         Cluster -contradicts-> Cluster Verdict -settled-> Cluster
    Claim -cites-> Passage (``verified`` on the edge)                 Passage -part_of-> Source
    ReviewDecision -reviewed-> Verdict  ReviewDecision -attributed_to-> Person
    ReviewDecision -part_of-> Run       ReviewDecision -supersedes-> ReviewDecision
    Verdict -overruled-> VoteOverrule (the adjudicator's label against where the vote leaned)
    Verdict -noted-> InjectionFlag -flags-> Answer | Claim | Passage (rule and snippet on the flag)

So every claim reaches the billing record and the model that produced it (claim -> answer -> call ->
model) and the policy that governed that call (call -> policy). ``trace_claim`` (from ``council.trace``)
follows those edges for one claim and returns them typed; ``draw`` (from ``council.drawing``) pictures the
graph with matplotlib, one column per node kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from .drawing import draw
from council.store.db import StoredRun
from .trace import ClaimTrace, trace_claim

__all__ = ["build_graph", "export_graph", "to_prov", "GraphFormat", "ClaimTrace", "draw", "trace_claim"]

GraphFormat = Literal["node-link", "graphml"]
PROV_NAMESPACE = "https://github.com/council-engine/council/ns#"


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (str, int, float, bool)):
        return value
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return json.dumps(value, default=str)


def _attrs(kind: str, label: str, fields: dict[str, Any]) -> dict[str, Any]:
    out = {"kind": kind, "label": label}
    # An unset field is left out, not written as "": GraphML declares one type per attribute name (a price
    # that is a number on one model and "" on another would be declared twice), and an unset record
    # field such as a verdict's fact-check label must not blank the node's display label.
    # A record's own ``kind`` or ``label`` field (a verdict's fact label, a cluster's K1) is kept under a
    # ``record_`` prefix so that it never replaces the node's type or display label.
    out.update({(f"record_{k}" if k in out else k): _scalar(v) for k, v in fields.items() if v is not None})
    return out


def build_graph(run: StoredRun) -> Any:
    """The provenance MultiDiGraph of one stored run."""
    import networkx as nx

    g = nx.MultiDiGraph(run_id=run.run_id)

    def edge(u: str, v: str, relation: str) -> None:
        g.add_edge(u, v, key=relation, relation=relation)

    # The order matters: nodes and edges are added (and exported) in this order.
    run_n = _run_nodes(g, run, edge)
    _call_nodes(g, run, run_n, edge)
    _answer_nodes(g, run, edge)
    _source_nodes(g, run, edge)
    _cluster_nodes(g, run, edge)
    _deliberation_nodes(g, run, edge)
    _failure_nodes(g, run, edge)
    _verdict_node(g, run, run_n, edge)
    _decision_nodes(g, run, run_n, edge)
    return g


def _run_nodes(g: Any, run: StoredRun, edge: Any) -> str:
    """The Run node, its two Policy nodes and the catalog's Model nodes; returns the run's node id."""
    run_n = f"run:{run.run_id}"
    g.add_node(run_n, **_attrs("Run", run.question[:60], {
        "run_id": run.run_id, "task": run.task, "question": run.question, "status": run.status,
        "created_at": run.created_at, "total_cost_usd": run.total_cost_usd, "recipe": run.recipe,
    }))
    for p in (run.member_policy, run.adjudication_policy):
        pid = f"policy:{p.ref}"
        g.add_node(pid, **_attrs("Policy", p.ref, {"name": p.name, "version": p.version, "body": p.model_dump(mode="json")}))
        edge(run_n, pid, "used")
    for m in run.models:
        g.add_node(f"model:{m.name}", **_attrs("Model", m.name, {
            "name": m.name, "model": m.model, "provider": m.provider, "local": m.local, "quality": m.quality,
            "input_usd_per_mtok": m.input_usd_per_mtok, "output_usd_per_mtok": m.output_usd_per_mtok,
        }))
    return run_n


def _call_nodes(g: Any, run: StoredRun, run_n: str, edge: Any) -> None:
    """Call nodes (billing records), with the policy that governed and the model that served each; a policy
    or model missing from the run's own records gets a node of its name."""
    for c in run.calls:
        cid = f"call:{c.call_id}"
        g.add_node(cid, **_attrs("Call", f"{c.member_label}#{c.attempt} {c.model} {c.status}", c.model_dump(mode="json")))
        edge(cid, run_n, "part_of")
        pid = f"policy:{c.policy_name}@{c.policy_version}"
        if pid not in g:
            g.add_node(pid, **_attrs("Policy", pid.removeprefix("policy:"), {"name": c.policy_name, "version": c.policy_version}))
        edge(cid, pid, "governed_by")
        mid = f"model:{c.model}"
        if mid not in g:
            g.add_node(mid, **_attrs("Model", c.model, {"name": c.model}))
        edge(cid, mid, "used")


def _answer_nodes(g: Any, run: StoredRun, edge: Any) -> None:
    """Answer nodes (each generated by its call) and the Claim nodes stated in them; an answer of a revision
    round has a ``revised_from`` edge to the answer it revises (those come first: ``revised_answers``)."""
    in_force = {a.answer_id for a in run.answers}
    for a in [*run.revised_answers, *run.answers]:
        aid = f"answer:{a.answer_id}"
        g.add_node(aid, **_attrs("Answer", f"{a.member_label}{f' r{a.round}' if a.round > 1 else ''}: {a.answer[:40]}", {
            "answer_id": a.answer_id, "member_label": a.member_label, "model": a.model, "answer": a.answer,
            "label_given": a.label, "round": a.round, "revision": a.revision, "revision_reason": a.revision_reason,
            "in_force": a.answer_id in in_force,
        }))
        edge(aid, f"call:{a.call_id}", "generated_by")
        if a.revised_from is not None:
            edge(aid, f"answer:{a.revised_from}", "revised_from")
        for cl in a.claims:
            clid = f"claim:{cl.claim_id}"
            g.add_node(clid, **_attrs("Claim", cl.text[:60], {
                "claim_id": cl.claim_id, "member_label": cl.member_label, "model": cl.model, "text": cl.text,
                "confidence": cl.confidence, "citations": [x.model_dump() for x in cl.citations],
            }))
            edge(clid, aid, "stated_in")


def _source_nodes(g: Any, run: StoredRun, edge: Any) -> None:
    """Source and Passage nodes, and the claims' ``cites`` edges to the passages (``verified`` on the edge)."""
    for src in run.sources:
        g.add_node(f"source:{src.source_id}", **_attrs("Source", src.title, {"source_id": src.source_id, "title": src.title}))
    passage_nodes = {}
    for p in run.passages:
        pid = f"passage:{run.run_id}:{p.passage_id}"
        passage_nodes[p.passage_id] = pid
        g.add_node(pid, **_attrs("Passage", f"{p.passage_id}: {p.text[:40]}", p.model_dump()))
        edge(pid, f"source:{p.source_id}", "part_of")
    for a in [*run.revised_answers, *run.answers]:
        for cl in a.claims:
            for cit in cl.citations:
                target = passage_nodes.get(cit.source_id)
                if target is not None:
                    g.add_edge(f"claim:{cl.claim_id}", target, key=f"cites:{cit.quote[:40]}", relation="cites",
                               quote=cit.quote, verified=bool(cit.verified))


def _cluster_nodes(g: Any, run: StoredRun, edge: Any) -> None:
    """Cluster nodes, their member claims, and the clusters they contradict."""
    for k in run.clusters:
        kid = f"cluster:{k.cluster_id}"
        g.add_node(kid, **_attrs("Cluster", f"{k.label} {k.status}: {k.text[:40]}", k.model_dump(mode="json")))
        for claim_id in k.claim_ids:
            edge(f"claim:{claim_id}", kid, "member_of")
        for other in k.contradicts:
            edge(kid, f"cluster:{other}", "contradicts")


def _failure_nodes(g: Any, run: StoredRun, edge: Any) -> None:
    """Failure nodes of the members that did not answer, with the calls they attempted."""
    for f in run.failures:
        fid = f"failure:{f.run_id}:{f.member_label}"
        g.add_node(fid, **_attrs("Failure", f"{f.member_label} failed: {f.error_kind}", f.model_dump(mode="json")))
        for call_id in f.call_ids:
            edge(fid, f"call:{call_id}", "attempted_by")


def _verdict_node(g: Any, run: StoredRun, run_n: str, edge: Any) -> None:
    """The Verdict node (if the run has one): the claims it rests on and rejects, the adjudicator's call,
    the failures it notes and how each cluster was settled."""
    v = run.verdict
    if v is None:
        return
    vid = f"verdict:{v.verdict_id}"
    g.add_node(vid, **_attrs("Verdict", (v.label or v.answer)[:60], v.model_dump(mode="json")))
    edge(vid, run_n, "part_of")
    for claim_id in v.support:
        edge(vid, f"claim:{claim_id}", "supported_by")
    for claim_id in v.contradicted:
        edge(vid, f"claim:{claim_id}", "contradicted_by")
    if v.adjudicator_call_id:
        edge(vid, f"call:{v.adjudicator_call_id}", "generated_by")
    for f in run.failures:
        edge(vid, f"failure:{f.run_id}:{f.member_label}", "noted")
    for k in run.clusters:
        g.add_edge(vid, f"cluster:{k.cluster_id}", key="settled", relation="settled", status=k.status,
                   settled_by=k.settled_by)
    _injection_nodes(g, run, vid, edge)


def _injection_nodes(g: Any, run: StoredRun, vid: str, edge: Any) -> None:
    """What the verdict records about attempts to steer it: a VoteOverrule node when the adjudicator's
    label differed from the vote's, an InjectionFlag node per rule that fired on a member's or a source's
    text, linked to the answer, claim or passage it fired on."""
    v = run.verdict
    assert v is not None
    if v.overruled_vote is not None:
        oid = f"overrule:{v.verdict_id}"
        o = v.overruled_vote
        g.add_node(oid, **_attrs("VoteOverrule", f"vote {o.vote_label} vs ruling {o.ruling_label}"
                                 + ("" if o.applied else " (vote stands)"), o.model_dump(mode="json")))
        edge(vid, oid, "overruled")
    answer_of = {a.member_label: f"answer:{a.answer_id}" for a in run.answers}
    flagged = [(m.member_label, h) for m in v.suspicious_members for h in m.hits]
    flagged += [(f"passage {p.passage_id}", h) for p in v.suspicious_sources for h in p.hits]
    for who, h in flagged:
        fid = f"injection:{v.verdict_id}:{who}:{h.rule}:{h.where}"
        g.add_node(fid, **_attrs("InjectionFlag", f"{h.rule} in {who}", {"flagged": who, **h.model_dump()}))
        edge(vid, fid, "noted")
        if h.where == "answer" and who in answer_of:
            target = answer_of[who]
        elif h.where.startswith("claim:"):
            target = f"claim:{h.where.removeprefix('claim:')}"
        elif h.where.startswith("passage:"):
            target = f"passage:{run.run_id}:{h.where.removeprefix('passage:')}"
        else:
            continue
        if target in g:
            edge(fid, target, "flags")


def _decision_nodes(g: Any, run: StoredRun, run_n: str, edge: Any) -> None:
    """ReviewDecision nodes, the Person who made each, the verdict reviewed and the decision superseded."""
    for d in run.decisions:
        did, person = f"decision:{d.decision_id}", f"person:{d.reviewer}"
        g.add_node(person, **_attrs("Person", d.reviewer, {"name": d.reviewer}))
        g.add_node(did, **_attrs("ReviewDecision", f"{d.label} by {d.reviewer}", {
            **d.model_dump(mode="json"), "overturns": d.overturns}))
        if f"verdict:{d.verdict_id}" in g:
            edge(did, f"verdict:{d.verdict_id}", "reviewed")
        edge(did, person, "attributed_to")
        edge(did, run_n, "part_of")
        if d.supersedes:
            edge(did, f"decision:{d.supersedes}", "supersedes")


def _deliberation_nodes(g: Any, run: StoredRun, edge: Any) -> None:
    """Review, Judgement and Escalation nodes of the recipe's review and escalate stages."""
    # Reviews are of the first answers (a revision round, if any, comes after them).
    answer_of = {a.member_label: f"answer:{a.answer_id}" for a in [*run.revised_answers, *run.answers] if a.round == 1}
    for r in run.reviews:
        rid = f"review:{r.review_id}"
        g.add_node(rid, **_attrs("Review", f"review by {r.reviewer_label} ({r.status})", {
            "review_id": r.review_id, "reviewer_label": r.reviewer_label, "reviewer_model": r.reviewer_model,
            "status": r.status, "shown": r.shown, "ranking": r.ranking, "error_kind": r.error_kind}))
        if r.call_id:
            edge(rid, f"call:{r.call_id}", "generated_by")
        if r.reviewer_label in answer_of:
            edge(rid, answer_of[r.reviewer_label], "reviewer_stated")
        for rank, m in enumerate(r.ranking, start=1):
            if m in answer_of:
                g.add_edge(rid, answer_of[m], key="reviews", relation="reviews", rank=rank)
        for m in r.shown:
            if m in answer_of and not g.has_edge(rid, answer_of[m], key="reviews"):
                g.add_edge(rid, answer_of[m], key="reviews", relation="reviews", rank=0)
        for j in r.judgements:
            jid = f"judgement:{r.review_id}:{j.claim_id}"
            g.add_node(jid, **_attrs("Judgement", f"{j.verdict}", {"verdict": j.verdict, "reason": j.reason,
                                                                   "quote": j.quote, "reviewer_label": r.reviewer_label}))
            edge(jid, rid, "part_of")
            g.add_edge(jid, f"claim:{j.claim_id}", key="judges", relation="judges", verdict=j.verdict)
    for e in run.escalations:
        eid = f"escalation:{e.escalation_id}"
        g.add_node(eid, **_attrs("Escalation", f"{e.item} {e.cluster_label or 'label'} {e.status}", e.model_dump(mode="json")))
        target = f"cluster:{e.target}" if e.target != "label" else f"run:{run.run_id}"
        edge(eid, target, "escalates")
        for cid in e.call_ids:
            edge(eid, f"call:{cid}", "decided_by")


def to_prov(run: StoredRun) -> Any:
    """The run as a W3C PROV document (``prov`` package): claims, answers, passages and the verdict are
    entities, calls are activities, models are agents, policies are plans."""
    from prov.model import PROV, ProvDocument

    doc = ProvDocument()
    doc.add_namespace("council", PROV_NAMESPACE)

    def q(kind: str, ident: str) -> str:
        return f"council:{kind}-{ident}"

    def attrs(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"prov:type": f"council:{kind}"}
        out.update({f"council:{k}": _scalar(v) for k, v in fields.items() if v is not None})
        return out

    for p in (run.member_policy, run.adjudication_policy):
        doc.entity(q("policy", p.ref.replace("@", "-")), {"prov:type": PROV["Plan"], "council:name": p.name,
                                                           "council:version": p.version})
    for m in run.models:
        doc.agent(q("model", m.name), {"prov:type": PROV["SoftwareAgent"], "council:model": m.model,
                                         "council:provider": m.provider or ""})
    run_act = doc.activity(q("run", run.run_id), run.created_at, run.finished_at,
                           attrs("Run", {"question": run.question, "task": run.task}))
    for c in run.calls:
        act = doc.activity(q("call", c.call_id), c.started_at, c.finished_at, attrs("Call", c.model_dump(
            include={"member_label", "attempt", "status", "error_kind", "prompt_tokens", "completion_tokens",
                     "cost_usd", "cost_source", "latency_s", "model_requested"})))
        doc.wasInformedBy(act, run_act)
        model_id = q("model", c.model)
        if not any(True for _ in doc.get_record(model_id)):
            doc.agent(model_id, {"prov:type": PROV["SoftwareAgent"]})
        doc.wasAssociatedWith(act, model_id, q("policy", f"{c.policy_name}-{c.policy_version}"))
    for src in run.sources:
        doc.entity(q("source", src.source_id), attrs("Source", {"title": src.title}))
    for p in run.passages:
        ent = doc.entity(q("passage", f"{run.run_id}-{p.passage_id}"), attrs("Passage", {"passage_id": p.passage_id, "text": p.text}))
        doc.hadMember(q("source", p.source_id), ent)
    for a in [*run.revised_answers, *run.answers]:
        ans = doc.entity(q("answer", a.answer_id), attrs("Answer", {"member_label": a.member_label, "answer": a.answer,
                                                                   "round": a.round}))
        doc.wasGeneratedBy(ans, q("call", a.call_id))
        if a.revised_from is not None:
            doc.wasRevisionOf(ans, q("answer", a.revised_from))
        for cl in a.claims:
            claim = doc.entity(q("claim", cl.claim_id), attrs("Claim", {"text": cl.text, "confidence": cl.confidence,
                                                                       "member_label": cl.member_label}))
            doc.wasDerivedFrom(claim, ans)
            for cit in cl.citations:
                if any(p.passage_id == cit.source_id for p in run.passages):
                    doc.wasDerivedFrom(claim, q("passage", f"{run.run_id}-{cit.source_id}"),
                                       other_attributes={"council:quote": cit.quote, "council:verified": bool(cit.verified)})
    for k in run.clusters:
        ent = doc.entity(q("cluster", k.cluster_id), attrs("Cluster", {"label": k.label, "status": k.status,
                                                                       "settled_by": k.settled_by, "support": k.support}))
        for claim_id in k.claim_ids:
            doc.hadMember(ent, q("claim", claim_id))
    _prov_deliberation(doc, run, q, attrs)
    v = run.verdict
    if v is not None:
        ent = doc.entity(q("verdict", v.verdict_id), attrs("Verdict", {"answer": v.answer, "label": v.label,
                                                                       "confidence": v.confidence, "degraded": v.degraded,
                                                                       "decided_by": v.decided_by,
                                                                       "overruled_vote": v.overruled_vote is not None,
                                                                       "suspicious_members": ",".join(
                                                                           m.member_label for m in v.suspicious_members)}))
        if v.adjudicator_call_id:
            doc.wasGeneratedBy(ent, q("call", v.adjudicator_call_id))
        else:
            doc.wasGeneratedBy(ent, run_act)
        for claim_id in v.support:
            doc.wasDerivedFrom(ent, q("claim", claim_id))
    _prov_decisions(doc, run, q, attrs)
    return doc


def _prov_deliberation(doc: Any, run: StoredRun, q: Any, attrs: Any) -> None:
    """Reviews, their judgements and escalations as PROV entities."""
    for r in run.reviews:
        rev = doc.entity(q("review", r.review_id), attrs("Review", {"reviewer_label": r.reviewer_label,
                                                                   "status": r.status, "ranking": ",".join(r.ranking)}))
        if r.call_id:
            doc.wasGeneratedBy(rev, q("call", r.call_id))
        for j in r.judgements:
            jud = doc.entity(q("judgement", f"{r.review_id}-{j.claim_id}"), attrs("Judgement", {"verdict": j.verdict,
                                                                                               "reason": j.reason}))
            doc.hadMember(rev, jud)
            doc.wasDerivedFrom(jud, q("claim", j.claim_id))
    for e in run.escalations:
        esc = doc.entity(q("escalation", e.escalation_id), attrs("Escalation", {
            "target": e.target, "reason": e.reason, "tier": e.tier, "status": e.status, "outcome": e.outcome}))
        if e.target != "label":
            doc.wasDerivedFrom(esc, q("cluster", e.target))
        for cid in e.call_ids:
            doc.wasGeneratedBy(esc, q("call", cid))


def _prov_decisions(doc: Any, run: StoredRun, q: Any, attrs: Any) -> None:
    """Each review decision: an entity generated by a review activity of a person (a ``prov:Person``
    agent), attributed to that person, derived from the council's verdict, a revision of the decision it
    supersedes."""
    from prov.model import PROV

    for d in run.decisions:
        person = q("person", d.reviewer.replace(" ", "_"))
        if not any(True for _ in doc.get_record(person)):
            doc.agent(person, {"prov:type": PROV["Person"], "council:name": d.reviewer})
        review = doc.activity(q("review", d.decision_id), d.decided_at, d.decided_at, attrs("Review", {"run_id": d.run_id}))
        doc.wasAssociatedWith(review, person)
        ent = doc.entity(q("decision", d.decision_id), attrs("ReviewDecision", {
            "label": d.label, "note": d.note, "council_label": d.council_label, "overturns": d.overturns,
            "solicited": d.solicited, "latest": d.latest, "decided_at": d.decided_at}))
        doc.wasGeneratedBy(ent, review, d.decided_at)
        doc.wasAttributedTo(ent, person)
        if run.verdict is not None and run.verdict.verdict_id == d.verdict_id:
            doc.used(review, q("verdict", d.verdict_id))
            doc.wasDerivedFrom(ent, q("verdict", d.verdict_id))
        if d.supersedes:
            doc.wasRevisionOf(ent, q("decision", d.supersedes))


def _graphml_safe(graph: Any) -> Any:
    """A copy of ``graph`` in which an attribute whose values differ in type across nodes (or across edges)
    is written as text: GraphML declares one type per attribute name and domain, and a name declared twice
    (a cluster's ``support`` is a number, a verdict's a list of claim ids) breaks tools that key by name."""
    g = graph.copy()
    for dicts in ([d for _, d in g.nodes(data=True)], [d for *_, d in g.edges(data=True)]):
        types: dict[str, set[type]] = {}
        for d in dicts:
            for k, v in d.items():
                types.setdefault(k, set()).add(type(v))
        mixed = {k for k, ts in types.items() if len(ts) > 1}
        for d in dicts:
            for k in mixed & d.keys():
                d[k] = str(d[k])
    return g


def export_graph(graph: Any, fmt: GraphFormat, out: str | Path | None = None) -> str:
    """Serialise the graph as node-link JSON or GraphML; write it to ``out`` when given, and return it."""
    import networkx as nx

    if fmt == "node-link":
        text = json.dumps(nx.node_link_data(graph, edges="edges"), indent=2, default=str)
    elif fmt == "graphml":
        text = "\n".join(nx.generate_graphml(_graphml_safe(graph)))
    else:
        raise ValueError(f"unknown graph format {fmt!r} (node-link or graphml)")
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    return text
