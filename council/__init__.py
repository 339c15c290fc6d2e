"""council: multi-model council deliberation with claim-level provenance and per-call billing records.

    import council
    result = council.ask("Is the Great Wall visible from orbit?", config="council.toml")
    result.verdict, result.claims, result.calls, result.total_cost_usd, result.graph

Public names are imported lazily: ``import council`` loads neither litellm nor langgraph.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Council": "engine",
    "RunResult": "engine",
    "ask": "engine",
    "check": "engine",
    "check_many": "batch",
    "acheck_many": "batch",
    "BatchReport": "batch",
    "CouncilConfig": "config",
    "load_config": "config",
    "TaskPolicy": "policy",
    "ModelEntry": "catalog",
    "CallRecord": "records",
    "Claim": "answers",
    "MemberAnswer": "answers",
    "MemberFailure": "answers",
    "Verdict": "verdict",
    "Store": "store",
    "Panel": "qualify",
    "qualify": "qualify",
    "build_graph": "provenance",
    "export_graph": "provenance",
    "CouncilError": "errors",
    "ConfigError": "errors",
    "InputError": "errors",
    "QualificationError": "errors",
    "ModelCallError": "errors",
    "StoreError": "errors",
    "RunNotFound": "errors",
    "BudgetExceeded": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'council' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
