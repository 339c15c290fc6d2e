"""Provenance: the graph of a run rebuilt from the store (networkx), its exports (node-link, GraphML,
W3C PROV-JSON, interactive HTML), claim tracing, drawing, and monitoring reports over the stored call records.

``from council.provenance import build_graph, export_graph, to_prov, trace_claim, draw``.
"""

from .drawing import draw
from .graph import GraphFormat, build_graph, export_graph, to_prov
from .html import GraphView, graph_view, render_html
from .trace import ClaimTrace, trace_claim

__all__ = [
    "ClaimTrace", "GraphFormat", "GraphView", "build_graph", "draw", "export_graph", "graph_view", "render_html",
    "to_prov", "trace_claim",
]
