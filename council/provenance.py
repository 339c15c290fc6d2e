"""The provenance graph of a run, rebuilt from the store as a networkx MultiDiGraph.

Nodes carry ``kind`` (Run, Policy, Model, Call, Answer, Claim, Failure, Verdict) and their record's fields;
node ids are ``kind:id`` (``claim:ab12...``). Edges carry ``relation`` (also the multigraph key):

    Run -used-> Policy                 Call -governed_by-> Policy     Call -used-> Model
    Call -part_of-> Run                Answer -generated_by-> Call    Claim -stated_in-> Answer
    Failure -attempted_by-> Call       Verdict -supported_by-> Claim  Verdict -contradicted_by-> Claim
    Verdict -generated_by-> Call       Verdict -noted-> Failure       Verdict -part_of-> Run

So every claim reaches the billing record and the model that produced it (claim -> answer -> call ->
model) and the policy that governed that call (call -> policy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from .store import StoredRun

__all__ = ["build_graph", "export_graph", "GraphFormat"]

GraphFormat = Literal["node-link", "graphml"]


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
    out.update({k: _scalar(v) for k, v in fields.items()})
    return out


def build_graph(run: StoredRun) -> Any:
    """The provenance MultiDiGraph of one stored run."""
    import networkx as nx

    g = nx.MultiDiGraph(run_id=run.run_id)

    def edge(u: str, v: str, relation: str) -> None:
        g.add_edge(u, v, key=relation, relation=relation)

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
    for a in run.answers:
        aid = f"answer:{a.answer_id}"
        g.add_node(aid, **_attrs("Answer", f"{a.member_label}: {a.answer[:40]}", {
            "answer_id": a.answer_id, "member_label": a.member_label, "model": a.model, "answer": a.answer,
            "label_given": a.label,
        }))
        edge(aid, f"call:{a.call_id}", "generated_by")
        for cl in a.claims:
            clid = f"claim:{cl.claim_id}"
            g.add_node(clid, **_attrs("Claim", cl.text[:60], {
                "claim_id": cl.claim_id, "member_label": cl.member_label, "model": cl.model, "text": cl.text,
                "confidence": cl.confidence, "citations": [x.model_dump() for x in cl.citations],
            }))
            edge(clid, aid, "stated_in")
    for f in run.failures:
        fid = f"failure:{f.run_id}:{f.member_label}"
        g.add_node(fid, **_attrs("Failure", f"{f.member_label} failed: {f.error_kind}", f.model_dump(mode="json")))
        for call_id in f.call_ids:
            edge(fid, f"call:{call_id}", "attempted_by")
    v = run.verdict
    if v is not None:
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
    return g


def export_graph(graph: Any, fmt: GraphFormat, out: str | Path | None = None) -> str:
    """Serialise the graph as node-link JSON or GraphML; write it to ``out`` when given, and return it."""
    import networkx as nx

    if fmt == "node-link":
        text = json.dumps(nx.node_link_data(graph, edges="edges"), indent=2, default=str)
    elif fmt == "graphml":
        text = "\n".join(nx.generate_graphml(graph))
    else:
        raise ValueError(f"unknown graph format {fmt!r} (node-link or graphml)")
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    return text
