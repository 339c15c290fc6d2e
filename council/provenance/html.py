"""The provenance graph as an interactive, self-contained HTML page (``council graph RUN --format html``).

Node positions come from :func:`council.provenance.drawing.layout` (one column per node kind); the page
draws them as SVG with a small script of our own (``assets/graph.js``: pan, zoom, click a node for its
record; a claim shows its member, model, billing record, policy and cited passages, and its trace is
highlighted). Nothing is fetched from the network: the script, the style and the data are inlined, so the
file works offline and can be mailed. Every text (claims, sources, model output) goes into the page as
JSON data and is put on screen with ``textContent``, never as markup, so a claim containing ``<script>``
is shown as text. ``GraphView`` displays the same viewer inline in Jupyter (``_repr_html_``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from council.errors import CouncilError
from .drawing import KIND_COLORS, KIND_COLUMNS, layout
from .trace import trace_claim

__all__ = ["ASSET_DIR", "GraphView", "ViewEdge", "ViewNode", "graph_view", "render_html", "viewer_html"]

ASSET_DIR = Path(__file__).resolve().parent / "assets"
"""Where ``graph.js`` and ``graph.css`` live (the web service serves them from here)."""

_X_STEP = 230.0
_Y_STEP = 30.0
_MAX_VALUE_CHARS = 2000
_HIDDEN = {"kind", "label", "body", "citations"}


class ViewNode(BaseModel):
    """A node as the viewer draws it."""

    id: str
    """The graph's node id (``claim:ab12...``)."""
    kind: str
    """Run, Policy, Model, Call, Answer, Claim, ..."""
    label: str
    """Short text drawn beside the node."""
    x: float
    y: float
    color: str
    details: list[tuple[str, str]] = Field(default_factory=list)
    """(field, value) rows shown when the node is clicked."""
    sections: list[tuple[str, list[tuple[str, str]]]] = Field(default_factory=list)
    """Titled groups of rows: for a claim, its billing record, policy and cited passages."""
    trace: list[str] = Field(default_factory=list)
    """Node ids highlighted with this node (a claim's trace)."""


class ViewEdge(BaseModel):
    """An edge as the viewer draws it."""

    source: str
    target: str
    relation: str


class GraphView(BaseModel):
    """Everything the viewer needs; ``_repr_html_`` shows it in Jupyter."""

    run_id: str
    title: str
    nodes: list[ViewNode]
    edges: list[ViewEdge]
    colors: dict[str, str]
    """Kind -> fill colour, for the legend."""

    def html(self) -> str:
        """The whole self-contained page."""
        return render_html(self)

    def _repr_html_(self) -> str:
        # An iframe keeps the page's script and style away from the notebook's own (and several graphs
        # in one notebook apart); srcdoc needs no file or server.
        return (f'<iframe srcdoc="{html.escape(self.html(), quote=True)}" style="width:100%;height:640px;'
                f'border:1px solid #ddd" title="provenance graph"></iframe>')


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


def _short(text: str, n: int = 34) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _label(node: str, data: dict[str, Any]) -> str:
    kind = data.get("kind")
    if kind == "Claim":
        return _short(f"{data.get('member_label')}: {data.get('text', '')}")
    if kind == "Call":
        return _short(f"{data.get('member_label')}#{data.get('attempt')} {data.get('model')} {data.get('status')}")
    if kind == "Run":
        return "run " + node.removeprefix("run:")[:8]
    return _short(str(data.get("label", node)))


def _claim_sections(graph: Any, node: str) -> tuple[list[tuple[str, list[tuple[str, str]]]], list[str]]:
    try:
        t = trace_claim(graph, node)
    except CouncilError:
        return [], []
    c = t.call_record
    sections: list[tuple[str, list[tuple[str, str]]]] = [
        ("member and model", [("member", t.member_label), ("model", c.model), ("first choice", c.model_requested),
                              ("provider", c.provider or "")]),
        ("billing record", [("call id", c.call_id), ("attempt", str(c.attempt)), ("status", c.status),
                            ("tokens in/out", f"{c.prompt_tokens}/{c.completion_tokens}"),
                            ("cost USD", f"{c.cost_usd:.6f} ({c.cost_source})"), ("latency s", f"{c.latency_s:.3f}"),
                            ("request id", c.request_id or "-")]),
        ("policy", [("policy", t.policy.removeprefix("policy:")), ("template", c.template_name)]),
    ]
    for p in t.passages:
        sections.append((f"cited passage {p.passage_id}", [
            ("quote", _text(p.quote)), ("verified", "yes" if p.verified else "NO"), ("passage", _text(p.text)),
            ("source", p.source_title or "")]))
    if t.cluster:
        sections.append(("judged", [("cluster status", t.cluster_status or ""),
                                    ("verdict", t.verdict_relation or "not used")]))
    return sections, t.nodes


def graph_view(graph: Any, title: str | None = None) -> GraphView:
    """The viewer's data for ``graph`` (a provenance graph from ``build_graph``)."""
    pos = layout(graph)
    nodes: list[ViewNode] = []
    for node, data in graph.nodes(data=True):
        if node not in pos:
            continue
        x, y = pos[node]
        kind = str(data.get("kind", ""))
        details = [(k, _text(v)) for k, v in data.items() if k not in _HIDDEN and v not in ("", None)]
        sections, trace = _claim_sections(graph, node) if kind == "Claim" else ([], [])
        nodes.append(ViewNode(id=node, kind=kind, label=_label(node, data), x=x * _X_STEP, y=-y * _Y_STEP,
                              color=KIND_COLORS.get(kind, "#cccccc"), details=details, sections=sections, trace=trace))
    edges = [ViewEdge(source=u, target=v, relation=str(rel)) for u, v, rel in graph.edges(data="relation")
             if u in pos and v in pos]
    run_id = str(graph.graph.get("run_id", ""))
    present = {n.kind for n in nodes}
    colors = {k: c for k, c in sorted(KIND_COLORS.items(), key=lambda kv: KIND_COLUMNS.get(kv[0], 99)) if k in present}
    return GraphView(run_id=run_id, title=title or f"provenance of run {run_id[:12]}", nodes=nodes, edges=edges,
                     colors=colors)


def json_for_script(value: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` element: no ``<``, ``>`` or ``&`` appears
    literally, so no text can close the element."""
    text = json.dumps(value, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def viewer_html(view: GraphView) -> str:
    """The viewer's container: the data as JSON and the empty panes ``graph.js`` fills in."""
    return (
        '<div class="council-graph" data-run="' + html.escape(view.run_id) + '">'
        '<div class="cg-toolbar"><button type="button" data-act="in" title="zoom in">+</button>'
        '<button type="button" data-act="out" title="zoom out">&minus;</button>'
        '<button type="button" data-act="fit">fit</button><span class="cg-legend"></span></div>'
        '<div class="cg-body"><div class="cg-canvas"></div><aside class="cg-details">'
        '<p class="cg-hint">Click a node to see its record. Drag to pan, wheel to zoom.</p></aside></div>'
        '<script type="application/json" class="cg-data">' + json_for_script(view.model_dump(mode="json")) + "</script>"
        "</div>"
    )


def render_html(view: GraphView) -> str:
    """A whole HTML page, script and style inlined: it needs no network and no server."""
    css = (ASSET_DIR / "graph.css").read_text(encoding="utf-8")
    js = (ASSET_DIR / "graph.js").read_text(encoding="utf-8")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(view.title)}</title><style>{css}</style></head>"
        f"<body><h1 class=\"cg-title\">{html.escape(view.title)}</h1>{viewer_html(view)}"
        f"<script>{js}</script></body></html>\n"
    )
