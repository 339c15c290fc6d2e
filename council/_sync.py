"""Running coroutines from sync code on one persistent event loop.

litellm (through httpx/aiohttp) caches async clients bound to the loop that created them; ``asyncio.run``
per call would leave those clients on a closed loop ("Event loop is closed" on the next call). So sync
entry points run their coroutine on a single background loop that lives as long as the process.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="council-loop", daemon=True).start()
            _loop = loop
            atexit.register(_close_clients, loop)
        return _loop


def _close_clients(loop: asyncio.AbstractEventLoop) -> None:
    """At exit, close the HTTP clients litellm cached on this loop, on this loop (no "Unclosed client
    session" warnings; litellm's own exit hook runs on a fresh loop and cannot close them)."""
    import sys

    gateway = sys.modules.get("council.calls.gateway")
    if gateway is None or loop.is_closed() or not loop.is_running():
        return
    try:
        asyncio.run_coroutine_threadsafe(gateway.aclose(), loop).result(timeout=5)
    except Exception:
        pass


def _in_jupyter_cell() -> bool:
    """True in a Jupyter (ipykernel) cell: its code runs inside the kernel's event loop, yet it is plain
    sync code to its author, and council's coroutine runs on the background loop, never on the kernel's."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "ipykernel" in sys.modules and type(shell).__name__ == "ZMQInteractiveShell"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the shared background loop and return its result.

    Refused inside a running event loop (blocking it would stall, or deadlock on, whatever else runs there),
    except in a Jupyter cell, where blocking the cell is what the user expects of a sync call."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if not _in_jupyter_cell():
            coro.close()
            raise RuntimeError("called a sync council function inside a running event loop: use the a-prefixed async one")
    finished = threading.Event()

    async def runner() -> T:
        try:
            return await coro
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(runner(), _background_loop())
    try:
        return future.result()
    except BaseException:
        # Interrupted here (Ctrl-C) while the coroutine still runs on the background loop: cancel it and
        # let its own cleanup finish (a run is marked failed, not left "running"), within a bound.
        if not future.done():
            future.cancel()
            finished.wait(timeout=10)
        raise
