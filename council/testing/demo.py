"""A scripted demonstration panel: notebooks, demos and tests run a whole council with no API key.

    from council.testing.demo import demo_panel, DEMO_WORKLOAD
    srv, config = demo_panel()          # a ScriptedServer on loopback + config tables for it
    result = Council(config).ask(GREAT_WALL, sources=[DEMO_SOURCE])
    srv.stop()

The panel's script and config are data in :mod:`council.testing.panel` (re-exported here; the scripted
server's ``--example`` plays the same script). Nothing here runs at import.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .panel import (
    BOILING,
    CANBERRA,
    DEMO_SOURCE,
    DEMO_WORKLOAD,
    EIFFEL,
    EVEREST,
    GREAT_WALL,
    MIDDLEMARCH,
    PLUTO,
    demo_config,
    demo_config_toml,
    demo_script,
    script_config,
)

if TYPE_CHECKING:
    from .server import ScriptedServer

__all__ = [
    "BOILING",
    "CANBERRA",
    "DEMO_SOURCE",
    "DEMO_WORKLOAD",
    "EIFFEL",
    "EVEREST",
    "GREAT_WALL",
    "MIDDLEMARCH",
    "PLUTO",
    "demo_config",
    "demo_config_toml",
    "demo_panel",
    "demo_script",
    "script_config",
]


def demo_panel(database: str | None = None, *, seed: int = 7) -> tuple[ScriptedServer, dict[str, Any]]:
    """Start the demonstration panel's scripted server on loopback and return it with its config tables.

    ``database``: a SQLAlchemy URL or a file path; None makes a fresh SQLite file in a new temporary
    directory (removed when the process exits), so a demo never writes into your own store. Stop the
    server with ``srv.stop()``.
    Sets ``LITELLM_LOCAL_MODEL_COST_MAP`` (unless set) so litellm does not fetch its price map."""
    from .server import ScriptedServer

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if database is None:
        folder = tempfile.mkdtemp(prefix="council-demo-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        database = f"sqlite:///{Path(folder) / 'council.db'}"
    else:
        from council.store.db import resolve_db_url

        database = resolve_db_url(database)
    srv = ScriptedServer(demo_script(seed)).start()
    return srv, demo_config(srv.base_url, database)
