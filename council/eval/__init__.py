"""The eval harness: is a council worth its cost, per task and per policy version?

    report = council.evaluate("golden.jsonl", task="check", arms="single:MODEL,majority,council",
                              config="council.toml", budget_usd=5.0, out="report.html")
    report.arms_frame()        # accuracy (95% bootstrap interval), cost per correct, latency, ECE ...
    council eval golden.jsonl --task check --arms single:MODEL,majority,council --out report.html
    council evals
    council eval compare EVAL_A EVAL_B          # exit 1 on a significant accuracy drop or a cost rise

Modules: ``golden`` (reading golden sets, scoring), ``arms`` (what is compared), ``outcomes`` (an arm's
outcome read from a stored run), ``runner`` (running, sharing, resuming, budget), ``store`` (the eval
tables), ``stats`` (scipy/numpy statistics), ``report`` and ``html`` (JSON, DataFrames, the HTML page and
its figures), ``cli`` (the commands; typer only at import).

Nothing heavy is imported here: ``council.eval.cli`` is imported by ``council --help``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "evaluate": "runner", "aevaluate": "runner", "EvalReport": "report", "write_report": "files",
    "read_report": "files", "ArmStats": "stats", "TagStats": "stats", "Comparison": "stats",
    "compare_outcomes": "stats", "ArmOutcome": "outcomes", "GoldenItem": "golden", "GoldenSet": "golden",
    "read_golden": "golden", "score_answer": "golden", "EvalInfo": "store", "EvalStore": "store",
    "Arm": "arms", "parse_arms": "arms", "compare_evals": "compare", "load_eval": "compare",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'council.eval' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
