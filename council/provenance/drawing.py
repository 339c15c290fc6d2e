"""Drawing a provenance graph with matplotlib: one column per node kind, left to right.

Columns follow the flow of a run: run, policies, models, calls (billing records), answers and failures,
claims, cited passages and their sources, clusters of equivalent claims, the verdict. Within a column,
nodes are ordered by member and attempt, so one member's call, answer and claims sit at similar heights.
Colours are fixed per kind (a legend names them). Re-exported as ``council.provenance.draw``; matplotlib
is imported only when drawing (``pip install 'council[notebooks]'``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from council.errors import CouncilError

__all__ = ["KIND_COLORS", "KIND_COLUMNS", "draw", "layout"]

KIND_COLUMNS: dict[str, int] = {
    "Run": 0, "Policy": 1, "Model": 2, "Call": 3, "Answer": 4, "Failure": 4, "Claim": 5, "Passage": 6,
    "Source": 7, "Cluster": 8, "Verdict": 9,
}
"""Column (left to right) of each node kind."""

KIND_COLORS: dict[str, str] = {
    "Run": "#7f7f7f", "Policy": "#9467bd", "Model": "#1f77b4", "Call": "#17becf", "Answer": "#2ca02c",
    "Failure": "#d62728", "Claim": "#ff7f0e", "Passage": "#bcbd22", "Source": "#8c564b", "Cluster": "#e377c2",
    "Verdict": "#000000",
}
"""Fill colour of each node kind (matplotlib's tab10 palette)."""

_LABEL_CHARS = 28


def _sort_key(index: int, data: dict[str, Any]) -> tuple[Any, ...]:
    member = str(data.get("member_label") or "")
    member = "~" + member if member == "adjudicator" else member  # the adjudicator below the members
    return (member, int(data.get("attempt") or 0), index)  # then in the order the graph was built


def layout(graph: Any, kinds: Iterable[str] | None = None) -> dict[str, tuple[float, float]]:
    """Node positions: x = the kind's column (compacted to the kinds present), y spread evenly from the top,
    each column centred. ``kinds`` limits the layout to those node kinds."""
    wanted = set(kinds) if kinds is not None else set(KIND_COLUMNS)
    columns: dict[int, list[tuple[tuple[Any, ...], str]]] = {}
    for index, (node, data) in enumerate(graph.nodes(data=True)):
        kind = data.get("kind")
        if kind in wanted:
            columns.setdefault(KIND_COLUMNS.get(kind, len(KIND_COLUMNS)), []).append((_sort_key(index, data), node))
    tallest = max((len(v) for v in columns.values()), default=1)
    pos: dict[str, tuple[float, float]] = {}
    for x, col in enumerate(sorted(columns)):
        nodes = [n for _, n in sorted(columns[col])]
        offset = (tallest - len(nodes)) / 2
        for i, n in enumerate(nodes):
            pos[n] = (float(x), -(offset + i))
    return pos


def _short(text: str, n: int = _LABEL_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _label(node: str, data: dict[str, Any]) -> str:
    kind = data.get("kind")
    if kind == "Call":
        return f"{data.get('member_label')}#{data.get('attempt')} {data.get('model')}\n{data.get('status')}"
    if kind == "Policy":
        return f"{data.get('name')}\n@{str(data.get('version', ''))[:6]}"
    if kind == "Cluster":
        return f"{data.get('record_label', '')} {data.get('status', '')}"
    if kind == "Claim":
        return f"{data.get('member_label')}: {_short(str(data.get('text', '')))}"
    if kind == "Run":
        return "run " + node.removeprefix("run:")[:8]
    return _short(str(data.get("label", node)))


def draw(
    graph: Any,
    ax: Any = None,
    *,
    highlight: Any = None,
    kinds: Iterable[str] | None = None,
    labels: bool = True,
    legend: bool = True,
    title: str | None = None,
) -> Any:
    """Draw ``graph`` (a provenance graph) on ``ax`` (a new figure sized to the graph when None) and return
    the axes. ``highlight``: a ``ClaimTrace`` (its edges and nodes are drawn bold red) or an iterable of node
    ids. ``kinds`` limits the drawing to those node kinds (e.g. leave out ``Run``)."""
    try:
        import matplotlib.pyplot as plt
        import networkx as nx
    except ModuleNotFoundError:
        raise CouncilError("drawing needs matplotlib: pip install 'council[notebooks]'") from None
    from matplotlib.lines import Line2D

    pos = layout(graph, kinds)
    g = graph.subgraph(pos)
    hi_nodes: set[str] = set()
    hi_edges: set[tuple[str, str]] = set()
    if highlight is not None:
        edges = getattr(highlight, "edges", None)
        if edges is not None:
            hi_edges = {(e.source, e.target) for e in edges}
            hi_nodes = {n for e in hi_edges for n in e}
        else:
            hi_nodes = set(highlight)
    if ax is None:
        columns = len({x for x, _ in pos.values()}) or 1
        rows = max((sum(1 for p in pos.values() if p[0] == x) for x in {p[0] for p in pos.values()}), default=1)
        _, ax = plt.subplots(figsize=(max(10.0, 1.9 * columns), max(4.0, 0.55 * rows)))
    plain = [(u, v) for u, v in g.edges() if (u, v) not in hi_edges]
    nx.draw_networkx_edges(g, pos, edgelist=plain, ax=ax, edge_color="#b0b0b0", width=0.7, arrows=True,
                           arrowsize=7, alpha=0.7, node_size=260)
    if hi_edges:
        nx.draw_networkx_edges(g, pos, edgelist=[e for e in g.edges() if e in hi_edges], ax=ax, edge_color="#d62728",
                               width=2.4, arrows=True, arrowsize=12, node_size=260)
    present = sorted({d.get("kind") for _, d in g.nodes(data=True)}, key=lambda k: KIND_COLUMNS.get(k, 99))
    for kind in present:
        nodes = [n for n, d in g.nodes(data=True) if d.get("kind") == kind]
        nx.draw_networkx_nodes(g, pos, nodelist=nodes, ax=ax, node_color=KIND_COLORS.get(kind, "#cccccc"),
                               node_size=260, edgecolors=["#d62728" if n in hi_nodes else "white" for n in nodes],
                               linewidths=[2.5 if n in hi_nodes else 0.8 for n in nodes])
    if labels:
        for n, d in g.nodes(data=True):
            x, y = pos[n]
            ax.annotate(_label(n, d), (x, y), xytext=(0, -9), textcoords="offset points", ha="center", va="top",
                        fontsize=6.5, color="#d62728" if n in hi_nodes else "#222222")
    if legend:
        handles = [Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=KIND_COLORS.get(k, "#ccc"),
                          markeredgecolor="white", label=k) for k in present]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=len(present), fontsize=8,
                  frameon=False)
    xs = sorted({x for x, _ in pos.values()})
    for x in xs:
        kinds_here = sorted({d.get("kind") for n, d in g.nodes(data=True) if pos[n][0] == x})
        ax.text(x, 0.9, " / ".join(kinds_here), ha="center", va="bottom", fontsize=8, fontweight="bold")
    ys = [y for _, y in pos.values()] or [0.0]
    ax.set_xlim(-0.6, (xs[-1] if xs else 0) + 0.6)
    ax.set_ylim(min(ys) - 1.0, 1.5)
    ax.set_axis_off()
    ax.set_title(title if title is not None else f"provenance of run {str(graph.graph.get('run_id', ''))[:12]}")
    return ax
