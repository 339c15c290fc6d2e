"""The web pages: runs (with filters), a run, its interactive graph, batches, model stats, the ask form,
and a page listing the API. Jinja2 templates with autoescaping: every text from a model, a source or a user
is escaped; data for scripts travels as JSON in ``<script type="application/json">`` and is displayed with
``textContent``. Scripts and styles are files of the package (``static/``), so pages work offline and the
Content-Security-Policy can forbid inline scripts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from .queries import RunFilters, batch_detail, list_batches, list_runs, run_costs

__all__ = ["router", "templates"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
templates.env.filters["usd"] = lambda v: "" if v is None else f"{v:.6f}"
templates.env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.0f}%"
templates.env.filters["when"] = lambda v: "" if v is None else v.strftime("%Y-%m-%d %H:%M:%S")


def _st(request: Request) -> Any:
    return request.app.state.council


def _page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx)


def _opt_float(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


@router.get("/", response_class=HTMLResponse)
async def runs_page(request: Request) -> HTMLResponse:
    q = request.query_params
    contested = {"yes": True, "no": False}.get(q.get("contested", ""))
    f = RunFilters(status=q.get("status") or None, contested=contested, task=q.get("task") or None,
                   min_cost=_opt_float(q.get("min_cost")), max_cost=_opt_float(q.get("max_cost")),
                   since=q.get("since") or None, until=q.get("until") or None, text=(q.get("q") or None))
    offset = max(0, int(q.get("offset", "0") or 0)) if (q.get("offset") or "0").isdigit() else 0
    page = await asyncio.to_thread(list_runs, _st(request).runs.store, f, 50, offset)
    return _page(request, "runs.html", page=page, filters=dict(q), title="runs")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(run_id: str, request: Request) -> HTMLResponse:
    run = await asyncio.to_thread(_st(request).runs.store.load_run, run_id)
    claims = {c.claim_id: c for a in run.answers for c in a.claims}
    by_label = {k.cluster_id: k.label for k in run.clusters}
    support, against = (set(run.verdict.support), set(run.verdict.contradicted)) if run.verdict else (set(), set())
    stages = sorted({c.node for c in run.calls} - {"member", "adjudicate", "cluster"})
    return _page(request, "run.html", run=run, claims=claims, cluster_label=by_label, support=support,
                 against=against, costs=run_costs(run), stages=stages, title=f"run {run.run_id[:12]}")


@router.get("/runs/{run_id}/graph", response_class=HTMLResponse)
async def graph_page(run_id: str, request: Request) -> HTMLResponse:
    from council.provenance.graph import build_graph
    from council.provenance.html import graph_view, viewer_html

    def build() -> Any:
        run = _st(request).runs.store.load_run(run_id)
        return run, graph_view(build_graph(run))

    run, view = await asyncio.to_thread(build)
    return _page(request, "graph.html", run=run, viewer=Markup(viewer_html(view)), view=view,
                 title=f"graph of run {run.run_id[:12]}")


@router.get("/batches", response_class=HTMLResponse)
async def batches_page(request: Request) -> HTMLResponse:
    batches = await asyncio.to_thread(list_batches, _st(request).runs.store)
    return _page(request, "batches.html", batches=batches, title="batches")


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
async def batch_page(batch_id: str, request: Request) -> HTMLResponse:
    from council.errors import RunNotFound

    b = await asyncio.to_thread(batch_detail, _st(request).runs.store, batch_id)
    if b is None:
        raise RunNotFound(f"no batch {batch_id}")
    return _page(request, "batch.html", batch=b, title=f"batch {batch_id[:12]}")


@router.get("/models", response_class=HTMLResponse)
async def models_page(request: Request) -> HTMLResponse:
    from council.provenance.monitoring import stats_report

    since = request.query_params.get("since") or None
    report = await asyncio.to_thread(stats_report, _st(request).runs.store, since, None)
    charts = _charts(report.models)
    return _page(request, "models.html", report=report, charts=charts, since=since or "", title="models")


def _charts(rows: list[Any]) -> list[dict[str, Any]]:
    """Horizontal bar charts (drawn as SVG by the template) of one measure per model."""
    measures = [("cost USD", "cost_usd", "{:.6f}"), ("mean latency s", "latency_mean_s", "{:.2f}"),
                ("failure rate", "failure_rate", "{:.0%}"), ("fallback rate", "fallback_rate", "{:.0%}"),
                ("reliability", "reliability", "{:.2f}")]
    charts = []
    for title, field, fmt in measures:
        values = [(r.model, getattr(r, field)) for r in rows]
        top = max((v for _, v in values if v is not None), default=0) or 1
        charts.append({"title": title, "bars": [{"model": m, "text": "n/a" if v is None else fmt.format(v),
                                                  "width": 0 if v is None else round(300 * v / top, 1)} for m, v in values]})
    return charts


@router.get("/ask", response_class=HTMLResponse)
async def ask_page(request: Request) -> HTMLResponse:
    models = _st(request).runs.models()
    # The plain council first: the form's default is the one-round recipe, the others are opt-in.
    recipes = sorted({m.recipe for m in models}, key=lambda r: (r != "council", r))
    return _page(request, "ask.html", recipes=recipes, title="ask the council")


@router.get("/api", response_class=HTMLResponse)
async def api_page(request: Request) -> HTMLResponse:
    schema = request.app.openapi()
    ops = [(method.upper(), path, op.get("summary") or "") for path, item in schema.get("paths", {}).items()
           for method, op in item.items()]
    return _page(request, "api.html", ops=ops, title="API")


@router.post("/login")
async def login(request: Request, token: str = Form(...)) -> Response:
    from .security import COOKIE, token_ok

    expected = _st(request).settings.token
    if expected is None or not token_ok(expected, {"authorization": f"Bearer {token}"}):
        return Response("wrong token", status_code=401, media_type="text/plain")
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return resp
