"""The JSON API under ``/api``: start councils, follow them (server-sent events), read runs, claims,
clusters, calls, costs, graphs, batches and model stats."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from council.calls.answers import Claim
from council.calls.records import CallRecord
from council.deliberation.clusters import ClaimCluster
from council.errors import RunNotFound
from council.provenance.monitoring import StatsReport
from .contracts import BatchDetail, BatchSummary, CostBreakdown, ErrorBody, RunDetail, RunList, RunRequestIn, RunStarted
from .queries import RunFilters, batch_detail, list_batches, list_runs, run_costs, run_detail

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["api"], responses={
    400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 413: {"model": ErrorBody}})

GraphFormatIn = Literal["node-link", "graphml", "prov-json", "html"]
_MEDIA = {"node-link": "application/json", "graphml": "application/xml", "prov-json": "application/json",
          "html": "text/html; charset=utf-8"}


def _state(request: Request) -> Any:
    return request.app.state.council


async def _load(request: Request, run_id: str) -> Any:
    return await asyncio.to_thread(_state(request).runs.store.load_run, run_id)


@router.post("/runs", status_code=202, response_model=RunStarted, summary="Start a council (ask or check)")
async def start_run(body: RunRequestIn, request: Request) -> RunStarted:
    """Start a council on a question (``ask``) or a claim (``check``) and return its run id at once; planning
    errors (no qualified model, budget) are answered here. Follow the run at ``events_url``."""
    runs = _state(request).runs
    run_id, job = await runs.start(body.task, body.question, body.recipe, body.sources)
    await runs.opened(run_id, job)
    return RunStarted(run_id=run_id, url=f"/api/runs/{run_id}", events_url=f"/api/runs/{run_id}/events",
                      page_url=f"/runs/{run_id}")


@router.get("/runs/{run_id}/events", summary="Follow a run as server-sent events",
            response_class=Response, responses={200: {"content": {"text/event-stream": {}}}})
async def run_events(run_id: str, request: Request) -> Any:
    """Events ``run_started``, ``call``, ``member_answered``, ``member_failed``, ``review``, ``round``,
    ``escalation``, ``clusters``, ``adjudication``, ``verdict``, ``done`` (or ``error``); each event's data
    is a RunEvent as JSON. The stream ends after ``done``."""
    from sse_starlette.sse import EventSourceResponse

    from .events import follow_run

    st = _state(request)

    async def gen() -> Any:
        n = 0
        async for ev in follow_run(st.runs.store, run_id, st.settings.poll_s, st.runs.errors.get, st.runs.starting):
            n += 1
            yield {"event": ev.type, "id": str(n), "data": ev.model_dump_json(exclude_none=True)}

    return EventSourceResponse(gen(), ping=15)


@router.get("/runs", response_model=RunList, summary="List runs, newest first, with filters")
async def runs(
    request: Request,
    status: Annotated[str | None, Query(description="running, done, degraded or failed")] = None,
    contested: Annotated[bool | None, Query(description="Only runs with (true) or without (false) contested claims")] = None,
    task: Annotated[Literal["ask", "check"] | None, Query()] = None,
    min_cost: Annotated[float | None, Query(ge=0)] = None,
    max_cost: Annotated[float | None, Query(ge=0)] = None,
    since: Annotated[str | None, Query(description="Started at or after: 2026-11-01, 2026-11-01T12:00, or an age: 7d")] = None,
    until: Annotated[str | None, Query(description="Started before (same forms as since)")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text the question contains")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RunList:
    f = RunFilters(status=status, contested=contested, task=task, min_cost=min_cost, max_cost=max_cost,
                   since=since, until=until, text=q)
    return await asyncio.to_thread(list_runs, _state(request).runs.store, f, limit, offset)


@router.get("/runs/{run_id}", response_model=RunDetail, summary="Everything stored of a run")
async def run(run_id: str, request: Request) -> RunDetail:
    return run_detail(await _load(request, run_id))


@router.get("/runs/{run_id}/claims", response_model=list[Claim], summary="A run's claims")
async def claims(run_id: str, request: Request) -> list[Claim]:
    r = await _load(request, run_id)
    return [c for a in r.answers for c in a.claims]


@router.get("/runs/{run_id}/clusters", response_model=list[ClaimCluster], summary="A run's claim clusters")
async def clusters(run_id: str, request: Request) -> list[ClaimCluster]:
    return (await _load(request, run_id)).clusters


@router.get("/runs/{run_id}/calls", response_model=list[CallRecord], summary="A run's call (billing) records")
async def calls(run_id: str, request: Request) -> list[CallRecord]:
    return (await _load(request, run_id)).calls


@router.get("/runs/{run_id}/costs", response_model=CostBreakdown, summary="A run's spend by member, model and node")
async def costs(run_id: str, request: Request) -> CostBreakdown:
    return run_costs(await _load(request, run_id))


@router.get("/runs/{run_id}/graph", summary="Export a run's provenance graph",
            response_class=Response, responses={200: {"content": {m: {} for m in set(_MEDIA.values())}}})
async def graph(run_id: str, request: Request, format: GraphFormatIn = "node-link") -> Response:
    """The formats of ``council graph``: node-link JSON, GraphML, W3C PROV-JSON, or the interactive HTML page."""
    text = await asyncio.to_thread(_graph_text, _state(request).runs.store, run_id, format)
    return Response(text, media_type=_MEDIA[format])


def _graph_text(store: Any, run_id: str, fmt: str) -> str:
    from council.provenance.graph import build_graph, export_graph, to_prov
    from council.provenance.html import graph_view

    run = store.load_run(run_id)
    if fmt == "prov-json":
        return str(to_prov(run).serialize(format="json", indent=2))
    g = build_graph(run)
    if fmt == "html":
        return graph_view(g).html()
    return export_graph(g, fmt)  # type: ignore[arg-type]


@router.get("/batches", response_model=list[BatchSummary], summary="Batches and their progress")
async def batches(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[BatchSummary]:
    return await asyncio.to_thread(list_batches, _state(request).runs.store, limit)


@router.get("/batches/{batch_id}", response_model=BatchDetail, summary="One batch with a page of its items")
async def batch(batch_id: str, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                offset: Annotated[int, Query(ge=0)] = 0) -> BatchDetail:
    out = await asyncio.to_thread(batch_detail, _state(request).runs.store, batch_id, limit, offset)
    if out is None:
        raise RunNotFound(f"no batch {batch_id}")
    return out


@router.get("/models/stats", response_model=StatsReport, summary="Per-model quality, cost and latency")
async def model_stats(
    request: Request,
    since: Annotated[str | None, Query(description="2026-11-01, 2026-11-01T12:00, or an age: 7d, 12h")] = None,
    until: Annotated[str | None, Query()] = None,
    model: Annotated[str | None, Query(description="Only this model (catalog name)")] = None,
    by: Annotated[Literal["minute", "hour", "day", "week"] | None, Query()] = None,
) -> StatsReport:
    from council.provenance.monitoring import stats_report

    return await asyncio.to_thread(stats_report, _state(request).runs.store, since, model, until=until, by=by)


@router.get("/recipes", summary="Recipes and the OpenAI model names they are offered under")
async def recipes(request: Request) -> JSONResponse:
    return JSONResponse([m.model_dump() for m in _state(request).runs.models()])


