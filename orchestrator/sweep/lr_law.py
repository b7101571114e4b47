"""The lr-vs-size law, lr = ref_lr x (N / ref_params) ** exponent over N = non-embedding parameters.

One law, two sources: a spec declares it (`rules.lr: {rule: power, ...}`, spec.PowerLrRule.law, applied by
expand), or the tuning stage fits it through the lrs it chose at the tuned sizes to carry them to the sizes
it left out (tune_space.TunedValues). Both evaluate it with `LrPowerLaw.at`, so a fitted law and a declared
one with the same parameters give the same lr at every N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def power(x: float, exponent: float) -> float:
    """x ** exponent, inf where that overflows: a rule's runaway value is refused where it is applied."""
    try:
        return x**exponent
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class LrPowerLaw:
    """lr = ref_lr x (N / ref_params) ** exponent (exponent < 0 typically: bigger models, smaller lr)."""

    ref_params: float
    ref_lr: float
    exponent: float

    def at(self, n_params: float) -> float:
        """The lr at N non-embedding parameters (inf where the power overflows)."""
        return self.ref_lr * power(n_params / self.ref_params, self.exponent)

    @classmethod
    def fit(cls, points: Sequence[tuple[float, float]]) -> LrPowerLaw:
        """The least-squares line through the (log N, log lr) of `points` (N, lr), referenced at their
        geometric-mean N and lr, where that line passes. Points at one N give exponent 0: their
        geometric-mean lr at every size."""
        xs = [math.log(n) for n, _ in points]
        ys = [math.log(lr) for _, lr in points]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = 0.0 if sxx == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        return cls(ref_params=math.exp(mx), ref_lr=math.exp(my), exponent=slope)
