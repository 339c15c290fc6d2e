"""Grouping equivalent claims across members into clusters, and finding contradictions.

Two claims are *the same* when their embeddings are close (cosine at or above the embedder's threshold),
they state the same numbers (embeddings barely see digits: "Statement 12" and "Statement 13" embed alike),
and they have the same polarity; a claim and its negation ("X is visible" / "X is not visible") embed
almost identically, so polarity decides: claims whose texts, with negations removed, are close but whose
polarities differ *contradict* each other. Clusters are the connected components of the "same" graph
(networkx); two clusters contradict when any of their claims do. Cluster ids are content hashes of their
claim ids, so they are stable, never list positions.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from council.calls.answers import Claim
from council.ids import content_id
from .embeddings import SIMILARITY_THRESHOLDS, Embedder
from .negation import polarity, strip_negation

__all__ = ["ClaimCluster", "ClusterStatus", "cluster_claims", "polarity", "strip_negation"]

ClusterStatus = Literal["accepted", "rejected", "contested", "uncorroborated", "unresolved"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


class ClaimCluster(BaseModel):
    """Equivalent claims of one or more members, and how the council settled them."""

    cluster_id: str
    """Content hash of the sorted claim ids."""
    label: str
    """``K1``, ``K2``, ... in the order clusters were first stated (for prompts and tables)."""
    claim_ids: list[str]
    member_labels: list[str]
    """Members with at least one claim in the cluster."""
    text: str
    """The cluster's representative claim (its most confident one)."""
    polarity: Literal["positive", "negative"]
    contradicts: list[str] = Field(default_factory=list)
    """Ids of clusters that say the opposite."""
    support: float = 0.0
    """Posterior that the cluster's claim is true, from the weighted vote (0-1)."""
    pro_weight: float = 0.0
    """Summed log-odds weight of the members stating it."""
    con_weight: float = 0.0
    """Summed log-odds weight of the members stating a contradicting cluster."""
    status: ClusterStatus = "uncorroborated"
    settled_by: Literal["vote", "escalation", "adjudicator", "none"] = "none"
    rationale: str = ""
    """The adjudicator's reason, for clusters it ruled on."""


def numbers(text: str) -> frozenset[str]:
    """The numbers a claim states, with thousands separators and trailing zeros of decimals ignored."""
    out = set()
    for n in _NUMBER.findall(text):
        n = n.replace(",", "")
        out.add(n.rstrip("0").rstrip(".") if "." in n else n.lstrip("0") or "0")
    return frozenset(out)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def cluster_claims(claims: list[Claim], embedder: Embedder, threshold: float | None = None) -> list[ClaimCluster]:
    """Cluster ``claims`` (in the order given) with ``embedder``; see the module docstring."""
    import networkx as nx

    if not claims:
        return []
    t = threshold if threshold is not None else SIMILARITY_THRESHOLDS.get(embedder.name, 0.8)
    vectors = embedder.embed([c.text for c in claims])
    plain = embedder.embed([strip_negation(c.text) for c in claims])
    pols = [polarity(c.text) for c in claims]
    nums = [numbers(c.text) for c in claims]
    same = nx.Graph()
    same.add_nodes_from(range(len(claims)))
    contra: list[tuple[int, int]] = []
    for i in range(len(claims)):
        for j in range(i + 1, len(claims)):
            if nums[i] != nums[j]:
                continue
            if pols[i] == pols[j]:
                if _dot(vectors[i], vectors[j]) >= t:
                    same.add_edge(i, j)
            elif _dot(plain[i], plain[j]) >= t:
                contra.append((i, j))
    components = sorted((sorted(c) for c in nx.connected_components(same)), key=lambda c: c[0])
    of: dict[int, int] = {i: k for k, comp in enumerate(components) for i in comp}
    clusters: list[ClaimCluster] = []
    for k, comp in enumerate(components):
        ids = sorted(claims[i].claim_id for i in comp)
        best = max(comp, key=lambda i: (claims[i].confidence, -i))
        clusters.append(
            ClaimCluster(
                cluster_id=content_id(*ids),
                label=f"K{k + 1}",
                claim_ids=[claims[i].claim_id for i in comp],
                member_labels=sorted({claims[i].member_label for i in comp}),
                text=claims[best].text,
                polarity=pols[comp[0]],
            )
        )
    for i, j in contra:
        a, b = clusters[of[i]], clusters[of[j]]
        if a is not b:
            if b.cluster_id not in a.contradicts:
                a.contradicts.append(b.cluster_id)
            if a.cluster_id not in b.contradicts:
                b.contradicts.append(a.cluster_id)
    return clusters
