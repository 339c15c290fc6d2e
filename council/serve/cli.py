"""The ``council serve`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback requires --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8321,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Config TOML file (default: $COUNCIL_CONFIG).", show_default=False)] = None,
    db: Annotated[str | None, typer.Option("--db", help="Database URL or SQLite path (default: the config's, $COUNCIL_DB, else the user data dir).", show_default=False)] = None,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token every route requires (default: $COUNCIL_SERVE_TOKEN).", show_default=False)] = None,
    cors_origin: Annotated[list[str] | None, typer.Option("--cors-origin", help="Allow browser calls from this origin; repeatable (default: CORS off).", show_default=False)] = None,
    max_question_chars: Annotated[int, typer.Option("--max-question-chars", help="Longest question or claim accepted.")] = 8000,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Largest request body accepted.")] = 1_000_000,
) -> None:
    """Serve the HTTP API, the OpenAI-compatible endpoint (/v1) and the web pages of runs."""
    import os

    from council.config.settings import CONFIG_ENV
    from council.errors import ConfigError

    try:
        import uvicorn

        from .app import create_app
        from .settings import ServeSettings
    except ModuleNotFoundError as exc:
        raise ConfigError(f"council serve needs the serve extra ({exc.name} is missing): pip install 'council[serve]'") from None
    url = db if db is None or "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"
    settings = ServeSettings(host=host, port=port, config=config, db=url, token=token, cors_origins=cors_origin or [],
                             max_question_chars=max_question_chars, max_body_bytes=max_body_bytes).check()
    app = create_app(settings)
    if config is None and not os.environ.get(CONFIG_ENV):
        from council.config.local import DEMO_NOTICE

        typer.echo(DEMO_NOTICE, err=True)
    where = f"[{host}]" if ":" in host else host
    typer.echo(f"council serving on http://{where}:{port}/ (API /api, OpenAI-compatible /v1, schema /openapi.json)"
               + (" · token required" if settings.token else ""), err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False, server_header=False)
