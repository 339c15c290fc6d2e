"""Offline test support: a scripted OpenAI-compatible chat server and the script format it plays.

- :mod:`council.testing.script`: the script models (:class:`Script`, :class:`ModelScript`,
  :class:`Answer`, :class:`Fault`) and :func:`load_script` for .toml/.json files.
- :mod:`council.testing.server`: :class:`ScriptedServer` (loopback HTTP, thread or asyncio) and the
  ``python -m council.testing.server --script FILE`` command.

The server names are imported lazily (PEP 562) so that importing the script models does not pull in
aiohttp, and so ``python -m council.testing.server`` does not find its module already imported.
Nothing here imports litellm or starts anything at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .script import Answer, Fault, ModelScript, Script, load_script

if TYPE_CHECKING:
    from .server import RequestRecord, ScriptedServer

__all__ = [
    "Answer",
    "Fault",
    "ModelScript",
    "RequestRecord",
    "Script",
    "ScriptedServer",
    "load_script",
]

_LAZY = {"RequestRecord", "ScriptedServer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
