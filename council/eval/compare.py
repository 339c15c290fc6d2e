"""Comparing two evals of the same golden set, item by item: a release gate for a policy, prompt or model
change. ``A`` is the baseline, ``B`` the candidate; each is an eval id (a unique prefix) in the store or a
JSON report written by ``council eval --out report.json``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from council.errors import InputError
from .outcomes import ArmOutcome
from .stats import Comparison, compare_outcomes
from .store import EvalInfo, EvalStore

__all__ = ["compare_evals", "load_eval"]


def load_eval(ref: str | os.PathLike[str], store: Any = None) -> tuple[EvalInfo, list[ArmOutcome]]:
    """An eval's record and outcomes, from a JSON report file or from the store (by id prefix)."""
    if str(ref).lower().endswith(".json") and Path(ref).is_file():
        from .files import read_report

        report = read_report(ref)
        return report.info, report.outcomes
    if store is None:
        from council.store.db import Store

        store = Store()
    estore = EvalStore(store)
    info = estore.get(str(ref))
    return info, estore.load(info.eval_id)


def compare_evals(a: str | os.PathLike[str], b: str | os.PathLike[str], *, arm: str | None = None, store: Any = None,
                  alpha: float = 0.05, cost_threshold: float = 0.10) -> list[Comparison]:
    """Compare ``arm`` (default: every arm the two evals share) of evals A and B on the items both scored.

    Raises ``InputError`` when they ran on different golden sets or different tasks, or share no arm."""
    info_a, out_a = load_eval(a, store)
    info_b, out_b = load_eval(b, store)
    if info_a.golden_hash != info_b.golden_hash:
        raise InputError(f"evals {info_a.eval_id} and {info_b.eval_id} ran on different golden sets "
                         f"({info_a.golden_hash[:12]} vs {info_b.golden_hash[:12]}): a paired test needs the same items")
    if info_a.task != info_b.task:
        raise InputError(f"evals {info_a.eval_id} ({info_a.task}) and {info_b.eval_id} ({info_b.task}) are of different tasks")
    shared = [x for x in info_a.arms if x in info_b.arms]
    if arm is not None:
        if arm not in shared:
            raise InputError(f"arm {arm!r} is not in both evals (A: {', '.join(info_a.arms)}; B: {', '.join(info_b.arms)})")
        shared = [arm]
    if not shared:
        raise InputError(f"the evals share no arm (A: {', '.join(info_a.arms)}; B: {', '.join(info_b.arms)})")
    return [compare_outcomes(x, out_a, out_b, alpha=alpha, cost_threshold=cost_threshold) for x in shared]


def stored_report(ref: str, store: Any = None) -> Any:
    """Rebuild an eval's report from the store (an eval id prefix): its outcomes so far, and the tag
    breakdown when the golden file is still there unchanged. An eval still running or killed shows the
    items it finished."""
    from council.errors import InputError as _InputError
    from .golden import read_golden
    from .report import build_report

    if store is None:
        from council.store.db import Store

        store = Store()
    estore = EvalStore(store)
    info = estore.get(ref)
    outcomes = estore.load(info.eval_id)
    items, bad = [], []
    try:
        gs = read_golden(info.golden_path, info.task)  # type: ignore[arg-type]
        if gs.sha256 == info.golden_hash:
            items, bad = gs.items, gs.bad_rows
    except _InputError:
        pass  # moved or changed since: no tags
    runs = sorted({o.run_id for o in outcomes if o.run_id})
    return build_report(info, items, bad, outcomes, spent_usd=estore.spent_usd(runs), spent_now_usd=0.0,
                        budget_exhausted=info.status == "budget", elapsed_s=0.0)
