"""How the analysis writes numbers in its sentences and tables, in one place: the table format, signed
percentages, percentage points, and the mark for a number that is missing or not finite."""

from __future__ import annotations

import math

MISSING = "–"  # en dash: no number (missing, NaN or infinite)


def fmt(v: float | None) -> str:
    """4 significant digits, the format of every number in the report's tables."""
    return f"{v:.4g}" if v is not None and math.isfinite(v) else MISSING


def pct(v: float, digits: int = 1) -> str:
    """A fraction as a signed percentage: `pct(0.3598) == "+36.0%"`, `pct(0.3598, 0) == "+36%"`."""
    return f"{100 * v:+.{digits}f}%" if math.isfinite(v) else MISSING


def plus_minus(v: float) -> str:
    """A half-width as an unsigned percentage: `plus_minus(0.24) == "±24%"` (a width has no sign)."""
    return f"±{100 * v:.0f}%" if math.isfinite(v) else MISSING


def points(v: float) -> str:
    """A difference of two fractions in signed percentage points, unit left to the sentence: `+15.0`."""
    return f"{100 * v:+.1f}" if math.isfinite(v) else MISSING
