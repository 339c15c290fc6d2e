"""Running coroutines from sync code on one persistent event loop.

litellm (through httpx/aiohttp) caches async clients bound to the loop that created them; ``asyncio.run``
per call would leave those clients on a closed loop ("Event loop is closed" on the next call). So sync
entry points run their coroutine on a single background loop that lives as long as the process.
"""

from __future__ import annotations

import asyncio
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
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the shared background loop and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
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
