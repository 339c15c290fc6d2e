"""The FastAPI application: ``create_app(ServeSettings(...))``.

Routes: the JSON API (``/api``), the OpenAI-compatible endpoint (``/v1``), the web pages, the package's
static files (``/static``, and the graph viewer's ``/assets/graph``), and the OpenAPI schema at
``/openapi.json`` (no Swagger UI: it would load from a CDN; ``/api`` lists the operations instead).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from council.errors import CouncilError
from .errors import public_error
from .runs import RunManager
from .security import Guard
from .settings import ServeSettings

__all__ = ["ServiceState", "create_app"]


@dataclass
class ServiceState:
    """What the routes share (``request.app.state.council``)."""

    settings: ServeSettings
    runs: RunManager


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(("/api", "/v1"))


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The service, configured by ``settings`` (checked: a non-loopback host needs a token)."""
    from . import api, chat, pages

    settings = (settings or ServeSettings()).check()
    state = ServiceState(settings=settings, runs=RunManager(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.runs.store  # open (and migrate) the database before the first request
        yield
        await state.runs.close()

    app = FastAPI(title="council", summary="Multi-model council deliberation with provenance and billing records",
                  version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.council = state

    async def council_error(request: Request, exc: Exception) -> Any:
        status, kind, message = public_error(exc)
        if _wants_html(request):
            return pages.templates.TemplateResponse(request, "error.html", {"status": status, "message": message,
                                                                            "title": "error"}, status_code=status)
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return JSONResponse({"error": {"message": f"{where}: {first.get('msg')}" if where else str(first.get("msg")),
                                       "type": "invalid_request_error", "code": 422}}, status_code=422)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if _wants_html(request):
            return pages.templates.TemplateResponse(request, "error.html", {"status": exc.status_code, "message": str(
                exc.detail), "title": "error"}, status_code=exc.status_code)
        return JSONResponse({"error": {"message": str(exc.detail), "type": "http_error", "code": exc.status_code}},
                            status_code=exc.status_code)

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(CouncilError, council_error)
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Council-Run-Id"])
    app.add_middleware(Guard, settings=settings)
    from council.provenance.html import ASSET_DIR

    here = Path(__file__).resolve().parent
    app.mount("/static", StaticFiles(directory=here / "static"), name="static")
    app.mount("/assets/graph", StaticFiles(directory=ASSET_DIR), name="graph-assets")
    app.include_router(api.router)
    app.include_router(chat.router)
    app.include_router(pages.router)

    @app.get("/login", include_in_schema=False, response_class=HTMLResponse)
    async def login_form() -> HTMLResponse:
        from .security import _LOGIN_FORM

        return HTMLResponse(_LOGIN_FORM)

    return app


def _version() -> str:
    import council

    return council.__version__
