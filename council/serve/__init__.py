"""``council serve``: the HTTP API, a council as an OpenAI-compatible model, and a web viewer of runs.

    from council.serve import ServeSettings, create_app
    app = create_app(ServeSettings(config="council.toml"))     # a FastAPI app; run it with uvicorn

Modules: ``settings`` (address, token, limits), ``security`` (token, Host/Origin checks, size limits,
headers), ``runs`` (councils run by the service, OpenAI model names), ``events`` (a run's progress from
the store), ``queries`` (store reads), ``api`` (``/api``), ``chat`` (``/v1``), ``pages`` (the web pages),
``app`` (the application), ``cli`` (the command). Needs the ``serve`` extra (fastapi, uvicorn,
sse-starlette); nothing here is imported by ``import council``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServeSettings":
        from .settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
