"""Calibrating a model's token probabilities on labelled claims (scikit-learn), and measuring calibration.

A member with ``confidence_from = "logprobs"`` reads ``P(SUPPORTED)`` from its first answer token. Small
models are biased (the 1.5B model leans towards True) and over-confident, so the raw number is mapped through
Platt scaling, a logistic regression on the raw log-odds, fitted on labelled claims (a held-apart set, or
claims with human feedback). Its two numbers go in the model entry (``calibration = {slope, intercept}``).
Isotonic regression is offered for comparison; it is not a two-number map, so entries use Platt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .catalog import PlattScaling

__all__ = ["fit_platt", "fit_isotonic", "expected_calibration_error", "logit"]

_EPS = 1e-6


def logit(p: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(p / (1.0 - p))


def fit_platt(raw: Sequence[float], supported: Sequence[bool], fitted_on: str = "") -> PlattScaling:
    """Platt scaling of raw ``P(SUPPORTED)`` values against the true labels (True = SUPPORTED).

    scikit-learn's logistic regression with its default L2 penalty (C = 1) on the slope: a small model's
    answers on easy claims are often perfectly separable, where the unpenalised fit would run the slope off
    to infinity (every answer certain). A negative slope is allowed: it says the wording's answer token
    means the opposite of what the prompt asks, and the calibration turns it round.
    """
    from sklearn.linear_model import LogisticRegression

    if len(set(supported)) < 2:
        raise ValueError("fitting a calibration needs both true and false claims")
    x = [[logit(p)] for p in raw]
    model = LogisticRegression(C=1.0, max_iter=1000).fit(x, [int(s) for s in supported])
    return PlattScaling(slope=float(model.coef_[0][0]), intercept=float(model.intercept_[0]), fitted_on=fitted_on)


def fit_isotonic(raw: Sequence[float], supported: Sequence[bool]) -> Any:  # an sklearn IsotonicRegression
    """Isotonic regression of the true label on raw ``P(SUPPORTED)`` (``.predict([p, ...])``); increasing or
    decreasing as the data say (a wording whose answer token means the opposite maps decreasing)."""
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(y_min=0.0, y_max=1.0, increasing="auto", out_of_bounds="clip").fit(list(raw), [int(s) for s in supported])


def expected_calibration_error(p_supported: Sequence[float], supported: Sequence[bool], bins: int = 10) -> float:
    """ECE of the predicted label's confidence: the label is the likelier side of ``p_supported``, its
    confidence ``max(p, 1 - p)``; the mean |accuracy - confidence| over equal-width confidence bins, weighted
    by how many predictions fall in each."""
    import numpy as np

    p = np.asarray(p_supported, dtype=float)
    truth = np.asarray(supported, dtype=bool)
    if p.size == 0:
        return float("nan")
    conf = np.maximum(p, 1.0 - p)
    correct = (p >= 0.5) == truth
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(idx):
        sel = idx == b
        total += sel.sum() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total / p.size)
