"""The statistics of an eval, with scipy and numpy: accuracy with a bootstrap interval, calibration,
latency percentiles, cost per correct answer, abstention and escalation, a breakdown by tag, and the
paired comparison of two evals (exact McNemar test).

Honesty rules: an interval is only given when there are at least ``MIN_ITEMS_CI`` scored items, a
calibration error only with ``MIN_ITEMS_ECE`` items with a stated confidence; below that the statistic is
None and its ``*_note`` says why, instead of a meaningless number. A failed arm (no answer) counts as wrong;
items skipped for budget and answers that cannot be scored are left out and counted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from .outcomes import ArmOutcome

__all__ = ["ArmStats", "Comparison", "MIN_ITEMS_CI", "MIN_ITEMS_ECE", "TagStats", "accuracy_interval",
           "arm_stats", "compare_outcomes", "expected_calibration_error", "reliability_bins", "tag_stats"]

MIN_ITEMS_CI = 10
"""Fewest scored items for a bootstrap interval."""
MIN_ITEMS_ECE = 30
"""Fewest items with a confidence for a calibration error (10 bins)."""
ECE_BINS = 10
BOOTSTRAP_RESAMPLES = 2000


class ArmStats(BaseModel):
    """One row of the eval's table: how one arm did over the golden set."""

    arm: str
    items: int
    """Golden items with an outcome for this arm (any status)."""
    scored: int
    """Items counted towards accuracy (answered and scorable, or failed)."""
    correct: int
    failed: int
    """Items the arm gave no answer for (counted wrong)."""
    skipped_budget: int
    unscored: int
    """Answers that could not be scored (left out of accuracy)."""
    accuracy: float | None
    ci_low: float | None
    """95% bootstrap percentile interval of the accuracy (None below ``MIN_ITEMS_CI`` scored items)."""
    ci_high: float | None
    ci_note: str | None = None
    """Why there is no interval, or how it was computed when not by bootstrap."""
    cost_usd: float
    """Total cost as if the arm had run alone (sum of the call records its answers rest on)."""
    cost_per_correct_usd: float | None
    """``cost_usd / correct`` (None when nothing was correct)."""
    tokens: int
    latency_p50_s: float | None
    latency_p90_s: float | None
    abstention_rate: float | None
    """Share of answered items where the arm said NOT_ENOUGH_INFO."""
    ece: float | None
    """Expected calibration error of the stated confidence, 10 equal-width bins."""
    ece_note: str | None = None
    escalation_rate: float | None
    """For recipes: share of answered items that went to the adjudicator or a stronger tier."""


class TagStats(BaseModel):
    """Accuracy of one arm on the items carrying one tag."""

    arm: str
    tag: str
    scored: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    ci_note: str | None = None


class Comparison(BaseModel):
    """A paired comparison of one arm in two evals of the same golden set (A the baseline, B the candidate)."""

    arm: str
    paired: int
    """Items scored in both evals."""
    accuracy_a: float | None
    accuracy_b: float | None
    only_a_right: int
    """Discordant pairs: A right, B wrong."""
    only_b_right: int
    p_value: float | None
    """Exact McNemar test (two-sided binomial test on the discordant pairs); 1.0 when there are none."""
    cost_per_correct_a: float | None
    cost_per_correct_b: float | None
    cost_per_correct_change: float | None
    """Relative change of B over A (0.25 = 25% more per correct answer)."""
    accuracy_dropped: bool
    """B is less accurate than A and the test says so at ``alpha``."""
    cost_rose: bool
    """B's cost per correct answer rose by more than the threshold."""
    alpha: float
    cost_threshold: float
    note: str | None = None

    @property
    def regression(self) -> bool:
        return self.accuracy_dropped or self.cost_rose


def accuracy_interval(correct: Sequence[bool], seed: int = 0) -> tuple[float | None, float | None, str | None]:
    """95% interval of the mean of ``correct``, or (None, None, why).

    The bootstrap percentile interval; when every item agrees (all right or all wrong) resampling cannot
    vary and would claim certainty, so the exact Clopper-Pearson interval is given instead, with a note."""
    n = len(correct)
    if n < MIN_ITEMS_CI:
        return None, None, f"no interval: {n} scored items, at least {MIN_ITEMS_CI} needed"
    from scipy.stats import binomtest, bootstrap

    data = np.asarray(correct, dtype=float)
    k = int(data.sum())
    if k in (0, n):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        return float(ci.low), float(ci.high), f"exact Clopper-Pearson interval: all {n} items {'right' if k else 'wrong'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((data,), np.mean, confidence_level=0.95, n_resamples=BOOTSTRAP_RESAMPLES,
                        method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high), None


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
                     ) -> list[tuple[float, float, float, int]]:
    """(bin centre, mean confidence, accuracy, count) of each non-empty bin of equal width."""
    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    ok = np.asarray(correct, dtype=float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            out.append(((b + 0.5) / bins, float(conf[mask].mean()), float(ok[mask].mean()), int(mask.sum())))
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool]) -> tuple[float | None, str | None]:
    n = len(confidence)
    if n < MIN_ITEMS_ECE:
        return None, f"no ECE: {n} items with a confidence, at least {MIN_ITEMS_ECE} needed"
    return float(sum(c / n * abs(acc - mc) for _, mc, acc, c in reliability_bins(confidence, correct))), None


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def arm_stats(arm: str, outcomes: list[ArmOutcome]) -> ArmStats:
    """The statistics of one arm over its outcomes."""
    counted = [o for o in outcomes if o.counted]
    answered = [o for o in outcomes if o.status == "ok"]
    correct = [o.right for o in counted]
    n_right = sum(correct)
    low, high, note = accuracy_interval(correct)
    confident = [o for o in answered if o.confidence is not None and o.correct is not None]
    ece, ece_note = expected_calibration_error([o.confidence for o in confident],  # type: ignore[misc]
                                               [bool(o.correct) for o in confident])
    cost = round(sum(o.cost_usd for o in outcomes if o.status != "skipped_budget"), 12)
    latencies = [o.latency_s for o in outcomes if o.latency_s is not None and o.status != "skipped_budget"]
    escal = [o.escalated for o in answered if o.escalated is not None]
    return ArmStats(
        arm=arm, items=len(outcomes), scored=len(counted), correct=n_right,
        failed=sum(o.status == "failed" for o in outcomes),
        skipped_budget=sum(o.status == "skipped_budget" for o in outcomes),
        unscored=sum(o.status == "ok" and o.correct is None for o in outcomes),
        accuracy=n_right / len(counted) if counted else None, ci_low=low, ci_high=high, ci_note=note,
        cost_usd=cost, cost_per_correct_usd=cost / n_right if n_right else None,
        tokens=sum(o.tokens for o in outcomes), latency_p50_s=_percentile(latencies, 50),
        latency_p90_s=_percentile(latencies, 90),
        abstention_rate=sum(o.abstained for o in answered) / len(answered) if answered else None,
        ece=ece, ece_note=ece_note, escalation_rate=sum(escal) / len(escal) if escal else None,
    )


def tag_stats(arm: str, outcomes: list[ArmOutcome], tags: dict[str, list[str]]) -> list[TagStats]:
    """Accuracy per tag (``tags``: item id -> its tags)."""
    by_tag: dict[str, list[bool]] = {}
    for o in outcomes:
        if o.counted:
            for t in tags.get(o.item_id, []):
                by_tag.setdefault(t, []).append(o.right)
    out = []
    for tag in sorted(by_tag):
        ok = by_tag[tag]
        low, high, note = accuracy_interval(ok)
        out.append(TagStats(arm=arm, tag=tag, scored=len(ok), accuracy=sum(ok) / len(ok), ci_low=low, ci_high=high,
                            ci_note=note))
    return out


def compare_outcomes(arm: str, a: list[ArmOutcome], b: list[ArmOutcome], *, alpha: float = 0.05,
                     cost_threshold: float = 0.10) -> Comparison:
    """Pair the outcomes of ``arm`` in evals A and B by item id and test whether B is worse."""
    from scipy.stats import binomtest

    ra = {o.item_id: o for o in a if o.arm == arm and o.counted}
    rb = {o.item_id: o for o in b if o.arm == arm and o.counted}
    common = sorted(set(ra) & set(rb))
    only_a = sum(ra[i].right and not rb[i].right for i in common)
    only_b = sum(rb[i].right and not ra[i].right for i in common)
    acc_a = sum(ra[i].right for i in common) / len(common) if common else None
    acc_b = sum(rb[i].right for i in common) / len(common) if common else None
    p = float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0

    def cpc(rows: dict[str, ArmOutcome]) -> float | None:
        right = sum(rows[i].right for i in common)
        return sum(rows[i].cost_usd for i in common) / right if right else None

    ca, cb = cpc(ra), cpc(rb)
    change = (cb - ca) / ca if ca and cb is not None else None
    note = None
    if len(common) < MIN_ITEMS_CI:
        note = f"only {len(common)} paired items: too few for the test to detect anything but a total collapse"
    return Comparison(
        arm=arm, paired=len(common), accuracy_a=acc_a, accuracy_b=acc_b, only_a_right=only_a, only_b_right=only_b,
        p_value=p, cost_per_correct_a=ca, cost_per_correct_b=cb, cost_per_correct_change=change,
        accuracy_dropped=bool(common) and only_a > only_b and p < alpha,
        cost_rose=(change is not None and change > cost_threshold) or (ca is not None and cb is None and acc_b == 0),
        alpha=alpha, cost_threshold=cost_threshold, note=note,
    )
