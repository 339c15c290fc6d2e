"""Quality drift: models whose recent behaviour differs significantly from their own history.

For every model, three rates are compared between a *recent* window of runs (started at or after
``recent``) and the model's *history* (runs started before it, from ``since`` on if given), with the
numbers of :func:`council.provenance.monitoring.model_stats`:

- ``failure_rate``: (failed + invalid) calls over sent calls;
- ``agreement``: agreement with final verdicts (the unsmoothed reliability: agree / judged);
- ``feedback_accuracy``: accuracy on labels a human gave with ``council feedback``.

Each is tested with Fisher's exact test on the 2x2 table (recent vs history, success vs not; scipy), and
flagged when p < ``alpha`` and both windows have at least ``min_n`` observations (fewer is reported as not
testable, never flagged). The flag says which way it moved and carries the counts, so the evidence is on
the screen: ``council stats --recent 1d`` prints it under the per-model table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from council.store.db import Store
from council.store.windows import When, parse_when
from .monitoring import ModelStats, model_stats

__all__ = ["DriftCheck", "DriftReport", "detect_drift", "drift_table"]

Metric = Literal["failure_rate", "agreement", "feedback_accuracy"]
_HIGHER_IS_WORSE = {"failure_rate": True, "agreement": False, "feedback_accuracy": False}


class DriftCheck(BaseModel):
    """One model and one rate, recent against history."""

    model: str
    metric: Metric
    recent_hits: int
    """Failures (for ``failure_rate``) or agreements, in the recent window."""
    recent_n: int
    history_hits: int
    history_n: int
    recent_rate: float | None
    history_rate: float | None
    p_value: float | None
    """Fisher's exact test, two-sided; None when not testable."""
    testable: bool
    """Both windows have at least ``min_n`` observations."""
    drifted: bool
    """Significant at ``alpha``."""
    direction: Literal["worse", "better", "same"]


class DriftReport(BaseModel):
    """Every check made, and the flags among them."""

    recent_since: datetime
    """Start of the recent window (UTC)."""
    history_since: datetime | None
    alpha: float
    min_n: int
    checks: list[DriftCheck]

    @property
    def flags(self) -> list[DriftCheck]:
        return [c for c in self.checks if c.drifted]


def _counts(s: ModelStats | None, metric: Metric) -> tuple[int, int]:
    if s is None:
        return 0, 0
    if metric == "failure_rate":
        return s.failed + s.invalid, s.sent
    if metric == "agreement":
        return s.agree, s.judged
    return s.feedback_agree, s.feedback_judged


def detect_drift(store: Store, recent: When, *, since: When = None, model: str | None = None,
                 alpha: float = 0.01, min_n: int = 10) -> DriftReport:
    """Compare each model's recent window (runs started at or after ``recent``) with its history."""
    from scipy.stats import fisher_exact

    start = parse_when(recent)
    if start is None:
        from council.errors import InputError

        raise InputError("the recent window needs a start (--recent 1d, or a date)")
    lo = parse_when(since)
    now = {s.model: s for s in model_stats(store, start, model)}
    past = {s.model: s for s in model_stats(store, lo, model, until=start)}
    checks = []
    for name in sorted(set(now) & set(past)):
        for metric in ("failure_rate", "agreement", "feedback_accuracy"):
            rh, rn = _counts(now.get(name), metric)  # type: ignore[arg-type]
            hh, hn = _counts(past.get(name), metric)  # type: ignore[arg-type]
            if not rn and not hn:
                continue
            testable = rn >= min_n and hn >= min_n
            p = float(fisher_exact([[rh, rn - rh], [hh, hn - hh]]).pvalue) if testable else None
            rr, hr = (rh / rn if rn else None), (hh / hn if hn else None)
            if rr is None or hr is None or rr == hr:
                direction = "same"
            else:
                direction = "worse" if (rr > hr) == _HIGHER_IS_WORSE[metric] else "better"
            checks.append(DriftCheck(model=name, metric=metric, recent_hits=rh, recent_n=rn, history_hits=hh,
                                     history_n=hn, recent_rate=rr, history_rate=hr, p_value=p, testable=testable,
                                     drifted=testable and p is not None and p < alpha, direction=direction))  # type: ignore[arg-type]
    return DriftReport(recent_since=start, history_since=lo, alpha=alpha, min_n=min_n, checks=checks)


def drift_table(report: DriftReport) -> object:
    """The flagged checks as a rich Table (what ``council stats --recent ...`` prints)."""
    from rich.table import Table

    t = Table("model", "rate", "recent", "history", "Fisher p", "moved", title="quality drift",
              caption=f"recent = runs since {report.recent_since:%Y-%m-%d %H:%M UTC}; flagged at p < {report.alpha:g} "
                      f"with at least {report.min_n} observations on each side")
    for c in report.flags:
        t.add_row(c.model, c.metric, f"{100 * (c.recent_rate or 0):.0f}% ({c.recent_hits}/{c.recent_n})",
                  f"{100 * (c.history_rate or 0):.0f}% ({c.history_hits}/{c.history_n})", f"{c.p_value:.2g}",
                  c.direction.upper() if c.direction == "worse" else c.direction)
    return t
