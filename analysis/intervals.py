"""Percentile intervals of bootstrap draws: the one definition the fits, their identifiability flags and the
comparisons share (numpy only)."""

from __future__ import annotations

import math

import numpy as np


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite draws along axis 0 ((nan, nan) when there are none)."""
    draws = np.asarray(draws, float)
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return math.nan, math.nan
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [q, 100 - q])
    return float(lo), float(hi)
