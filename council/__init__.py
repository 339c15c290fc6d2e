"""council: multi-model council deliberation with claim-level provenance and per-call billing records.

    import council
    result = council.ask("Is the Great Wall visible from orbit?", config="council.toml")
    result.verdict, result.claims, result.calls, result.total_cost_usd, result.graph

Public names are imported lazily: ``import council`` loads neither litellm nor langgraph.

The package is layered; imports point down only (checked by import-linter's contracts in pyproject.toml):

    cli                      the ``council`` command
    serve                    ``council serve``: HTTP API, OpenAI-compatible endpoint, web viewer
    batch | review | eval    batch runs of fact checks; the human review path; the eval harness
    pipeline                 typed state, the LangGraph wiring, the ``Council`` API
    provenance               provenance graph, PROV, traces, drawing, monitoring
    store                    tables, migrations, the store, the batch queue, resume
    deliberation             sources, clusters, vote, claims, reconciliation, adjudication, verdict
    calls                    gateway (the only litellm importer), member calls, budget, prompts, records
    config                   settings, policies, catalog, qualification, local models
    errors, ids, _sync       shared by all

``council.testing`` (the scripted OpenAI-compatible server) is beside them and imported by none.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Council": "pipeline.engine",
    "RunResult": "pipeline.engine",
    "ask": "pipeline.engine",
    "check": "pipeline.engine",
    "check_many": "batch.api",
    "acheck_many": "batch.api",
    "BatchReport": "batch.runner",
    "evaluate": "eval.runner",
    "aevaluate": "eval.runner",
    "EvalReport": "eval.report",
    "CouncilConfig": "config.settings",
    "load_config": "config.settings",
    "TaskPolicy": "config.policy",
    "ModelEntry": "config.catalog",
    "CallRecord": "calls.records",
    "Claim": "calls.answers",
    "MemberAnswer": "calls.answers",
    "MemberFailure": "calls.answers",
    "Verdict": "deliberation.verdict",
    "Store": "store.db",
    "Panel": "config.qualify",
    "qualify": "config.qualify",
    "build_graph": "provenance.graph",
    "export_graph": "provenance.graph",
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
