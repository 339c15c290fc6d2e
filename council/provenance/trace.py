"""Tracing one claim through a run's provenance graph to everything that produced and judged it.

``trace_claim(graph, claim_id)`` follows the graph's edges from a Claim node (see ``council.provenance``)::

    claim -stated_in-> answer -generated_by-> call -used-> model
                                              call -governed_by-> policy
                                              call -part_of-> run
    claim -cites-> passage -part_of-> source
    claim -member_of-> cluster
    verdict -supported_by | contradicted_by-> claim
    judgement -judges-> claim            (peer review: judgement -part_of-> review -reviews-> answer)
    escalation -escalates-> cluster      (cascade)
    answer -revised_from-> answer        (revision rounds: back to the member's first answer)

and returns a typed :class:`ClaimTrace`: the nodes found, the billing record of the call as a
:class:`~council.records.CallRecord`, the cited passages with their quotes and verification, and the edges
walked (to highlight with ``council.provenance.draw``). Re-exported from ``council.provenance``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from council.errors import InputError
from council.calls.records import CallRecord

__all__ = ["CitedPassage", "ClaimTrace", "TraceEdge", "trace_claim"]


class TraceEdge(BaseModel):
    """One edge of the graph walked by the trace, in the graph's own direction."""

    source: str
    """Node id the edge starts at."""
    target: str
    """Node id the edge ends at."""
    relation: str
    """The edge's ``relation`` (``stated_in``, ``generated_by``, ``used``, ...)."""


class CitedPassage(BaseModel):
    """A source passage the claim cites."""

    node: str
    """Passage node id."""
    passage_id: str
    """The id the members saw (``S1``...)."""
    quote: str
    """The words the member quoted."""
    verified: bool
    """True when the quote occurs in the passage."""
    text: str
    """The passage's text."""
    source_node: str | None = None
    """The Source node the passage is part of."""
    source_title: str | None = None
    """Title of that source (file name, or ``text N``)."""


class ClaimTrace(BaseModel):
    """Where one claim came from: member, answer, model call (billing record), model, policy, evidence,
    and how the council judged it."""

    claim: str
    """Claim node id (``claim:...``)."""
    claim_id: str
    text: str
    member_label: str
    confidence: float
    answer: str
    """Answer node the claim was stated in."""
    call: str
    """Call node (billing record) that produced the answer."""
    call_record: CallRecord
    """That billing record: model, tokens, cost, latency, status, request id, policy version."""
    model: str
    """Model node of the model that served the call."""
    policy: str
    """Policy node that governed the call."""
    run: str | None = None
    """Run node the call was part of."""
    passages: list[CitedPassage] = Field(default_factory=list)
    """Passages the claim cites, in citation order."""
    cluster: str | None = None
    """Cluster node of equivalent claims the claim was grouped into."""
    cluster_status: str | None = None
    """That cluster's status (accepted, rejected, contested, uncorroborated, unresolved)."""
    verdict: str | None = None
    """Verdict node, when the verdict supports or contradicts the claim."""
    verdict_relation: str | None = None
    """``supported_by`` or ``contradicted_by`` (the verdict's edge to the claim), else None."""
    judgements: dict[str, str] = Field(default_factory=dict)
    """Peer reviewers' judgements of the claim: reviewer label -> accurate / inaccurate / unverifiable."""
    escalation: str | None = None
    """Escalation node, when the claim's cluster was put to a cascade's strong tier."""
    round: int = 1
    """The answer round the claim was stated in (2, 3... in revision rounds)."""
    revised_from: list[str] = Field(default_factory=list)
    """Answer nodes the claim's answer revises, the latest first, back to the member's first answer."""
    edges: list[TraceEdge] = Field(default_factory=list)
    """Every edge walked, claim first."""

    @property
    def path(self) -> list[str]:
        """The chain claim -> answer -> call -> model, then the call's policy."""
        return [self.claim, self.answer, self.call, self.model, self.policy]

    @property
    def nodes(self) -> list[str]:
        """Every node the trace reached, each once, claim first."""
        seen: dict[str, None] = {self.claim: None}
        for e in self.edges:
            seen.setdefault(e.source, None)
            seen.setdefault(e.target, None)
        return list(seen)

    def describe(self) -> str:
        """The trace as indented lines of text, one per edge walked."""
        c = self.call_record
        lines = [f"claim {self.claim_id}: {self.text!r} (member {self.member_label}, confidence {self.confidence:.2f})",
                 f"  stated_in    {self.answer}",
                 f"  generated_by {self.call}  [{c.member_label} attempt {c.attempt}, {c.status}, "
                 f"{c.prompt_tokens}+{c.completion_tokens} tokens, ${c.cost_usd:.6f} ({c.cost_source}), "
                 f"{c.latency_s:.2f} s, request {c.request_id or '-'}]",
                 f"  used         {self.model}"
                 + (f" (first choice {c.model_requested})" if c.model != c.model_requested else ""),
                 f"  governed_by  {self.policy}"]
        for p in self.passages:
            mark = "verified" if p.verified else "NOT verified"
            where = f" of {p.source_title!r}" if p.source_title else ""
            lines.append(f"  cites        {p.passage_id}{where}: {p.quote!r} ({mark})")
        if self.cluster:
            lines.append(f"  member_of    {self.cluster} ({self.cluster_status})")
        for reviewer, verdict in self.judgements.items():
            lines.append(f"  judged       {verdict} by reviewer {reviewer}")
        if self.escalation:
            lines.append(f"  escalated    {self.escalation}")
        for prev in self.revised_from:
            lines.append(f"  revised_from {prev}")
        if self.verdict:
            lines.append(f"  verdict      {self.verdict} --{self.verdict_relation}--> this claim")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def frame(self) -> Any:
        """The edges walked as a pandas DataFrame (source, relation, target, target kind, target label)."""
        from council.store.frames import require_pandas

        pd = require_pandas()
        return pd.DataFrame([{"source": e.source, "relation": e.relation, "target": e.target} for e in self.edges],
                            columns=["source", "relation", "target"])


def _out(g: Any, node: str, relation: str) -> list[str]:
    return [v for _, v, rel in g.out_edges(node, data="relation") if rel == relation]


def _one(g: Any, node: str, relation: str, what: str) -> str:
    targets = _out(g, node, relation)
    if not targets:
        raise InputError(f"{node} has no {what} ({relation} edge) in this graph")
    return targets[0]


def _claim_node(g: Any, claim_id: str) -> str:
    key = claim_id.removeprefix("claim:")
    if f"claim:{key}" in g:
        return f"claim:{key}"
    matches = [n for n, kind in g.nodes(data="kind") if kind == "Claim" and n.startswith(f"claim:{key}")]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InputError(f"no claim {claim_id!r} in this graph")
    raise InputError(f"claim id {claim_id!r} is ambiguous: give more characters")


def trace_claim(graph: Any, claim_id: str) -> ClaimTrace:
    """Trace the claim ``claim_id`` (its id, a unique prefix of it, or its node id ``claim:...``) through
    ``graph``, a provenance graph from ``council.provenance.build_graph`` or ``RunResult.graph``.

    Raises InputError when the claim is not in the graph or the graph lacks its answer, call, model or
    policy (a graph not built by council)."""
    g = graph
    claim = _claim_node(g, claim_id)
    edges: list[TraceEdge] = []

    def walk(u: str, relation: str, what: str) -> str:
        v = _one(g, u, relation, what)
        edges.append(TraceEdge(source=u, target=v, relation=relation))
        return v

    answer = walk(claim, "stated_in", "answer")
    call = walk(answer, "generated_by", "call")
    model = walk(call, "used", "model")
    policy = walk(call, "governed_by", "policy")
    runs = _out(g, call, "part_of")
    if runs:
        edges.append(TraceEdge(source=call, target=runs[0], relation="part_of"))
    passages: list[CitedPassage] = []
    for _, target, data in g.out_edges(claim, data=True):
        if data.get("relation") != "cites":
            continue
        edges.append(TraceEdge(source=claim, target=target, relation="cites"))
        sources = _out(g, target, "part_of")
        if sources:
            edges.append(TraceEdge(source=target, target=sources[0], relation="part_of"))
        p = g.nodes[target]
        passages.append(CitedPassage(
            node=target, passage_id=str(p.get("passage_id", target)), quote=str(data.get("quote", "")),
            verified=bool(data.get("verified")), text=str(p.get("text", "")),
            source_node=sources[0] if sources else None,
            source_title=str(g.nodes[sources[0]].get("title", "")) if sources else None,
        ))
    clusters = _out(g, claim, "member_of")
    if clusters:
        edges.append(TraceEdge(source=claim, target=clusters[0], relation="member_of"))
    verdict = relation = None
    for u, _, rel in g.in_edges(claim, data="relation"):
        if rel in ("supported_by", "contradicted_by"):
            verdict, relation = u, rel
            edges.append(TraceEdge(source=u, target=claim, relation=rel))
            break
    judgements: dict[str, str] = {}
    for u, _, rel in g.in_edges(claim, data="relation"):
        if rel == "judges":
            judgements[str(g.nodes[u].get("reviewer_label", u))] = str(g.nodes[u].get("verdict"))
            edges.append(TraceEdge(source=u, target=claim, relation="judges"))
    escalation = None
    if clusters:
        for u, _, rel in g.in_edges(clusters[0], data="relation"):
            if rel == "escalates":
                escalation = u
                edges.append(TraceEdge(source=u, target=clusters[0], relation="escalates"))
    history: list[str] = []
    at = answer
    while (prev := _out(g, at, "revised_from")) and prev[0] not in history:
        edges.append(TraceEdge(source=at, target=prev[0], relation="revised_from"))
        history.append(prev[0])
        at = prev[0]
    node = g.nodes[claim]
    call_attrs = g.nodes[call]
    record = CallRecord.model_validate({k: v for k, v in call_attrs.items() if k in CallRecord.model_fields})
    return ClaimTrace(
        claim=claim, claim_id=str(node.get("claim_id", claim.removeprefix("claim:"))), text=str(node.get("text", "")),
        member_label=str(node.get("member_label", "")), confidence=float(node.get("confidence", 0.0)),
        answer=answer, call=call, call_record=record, model=model, policy=policy, run=runs[0] if runs else None,
        passages=passages, cluster=clusters[0] if clusters else None,
        cluster_status=str(g.nodes[clusters[0]].get("status")) if clusters else None,
        verdict=verdict, verdict_relation=relation, judgements=dict(sorted(judgements.items())),
        escalation=escalation, round=int(g.nodes[answer].get("round") or 1), revised_from=history, edges=edges,
    )
