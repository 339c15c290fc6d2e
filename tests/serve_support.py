"""Helpers of the ``council serve`` tests: the real service (uvicorn) on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


class LiveServer:
    """``council serve``'s app under uvicorn on 127.0.0.1:<free port>, stopped by ``stop()``."""

    def __init__(self, settings: Any) -> None:
        from council.serve import create_app

        self.app = create_app(settings)
        self.settings = settings
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


@pytest.fixture
def live(scripted: Callable[[dict[str, Any]], Any], write_config: Callable[[dict[str, Any]], Path],
         db_url: str) -> Iterator[Callable[..., LiveServer]]:
    """Start the service on a scripted panel: ``live(script=None, config_overrides=None, **settings)``."""
    from conftest import panel_config, panel_script

    from council.serve import ServeSettings

    servers: list[LiveServer] = []

    def start(script: dict[str, Any] | None = None, tables: dict[str, Any] | None = None, **settings: Any) -> LiveServer:
        srv = scripted(script or panel_script())
        cfg = tables if tables is not None else panel_config(srv.base_url)
        cfg = {**cfg, "database": db_url}
        path = write_config(cfg)
        live_srv = LiveServer(ServeSettings(config=path, **settings)).start()
        live_srv.scripted = srv  # type: ignore[attr-defined]
        live_srv.config_path = path  # type: ignore[attr-defined]
        servers.append(live_srv)
        return live_srv

    yield start
    for s in servers:
        s.stop()
