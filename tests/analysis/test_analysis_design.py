"""analysis/design.py: the expected width a design leaves, candidate scoring per FLOP, and the rounds' stops,
checked on synthetic cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.design import (
    STOP_BUDGET,
    STOP_NO_GAIN,
    STOP_TARGET,
    candidates,
    choose_batch,
    draw_losses,
    expected_width,
    measure,
    next_round,
    point_fits,
)
from analysis.errors import FitError

EBT, TPP = "ebt", "transformer_pp"
ALPHA = {EBT: 0.1, TPP: 0.1}
FIVE = list(np.geomspace(1.0, 8.0, 5))


def flat(family: str, x: float) -> float:
    return 1.0  # every trial costs the same: only the width decides


def tokens(family: str, x: float) -> float:
    return x * (8.0 if family == EBT else 1.0)


def test_at_equal_cost_widening_the_range_beats_another_seed_at_the_centre() -> None:
    """Low noise, equal costs: a new x beyond the largest adds leverage, a seed at the centre adds none to
    the slope, so the first choice widens the range (for one family or the other)."""
    design = {EBT: FIVE, TPP: FIVE}
    centre = float(np.geomspace(1.0, 8.0, 5)[2])
    grid = [centre, 64.0]
    batch = choose_batch(design, grid, flat, ALPHA, 0.005, batch=1, min_distinct=5)
    assert len(batch) == 1 and batch[0].candidate.x == 64.0 and batch[0].candidate.kind == "new x"
    seed = next(c for c in candidates(design, grid, flat, 5) if c.kind == "seed" and c.family == TPP)
    wider = expected_width({EBT: FIVE, TPP: [*FIVE, 64.0]}, ALPHA, 0.005)
    centred = expected_width({EBT: FIVE, TPP: [*FIVE, seed.x]}, ALPHA, 0.005)
    assert wider < 0.9 * centred


def test_per_flop_the_cheaper_family_is_chosen_when_both_help_alike() -> None:
    """Both families at the same exponent and design: a trial narrows the interval about as much for either,
    so per FLOP the Transformer++ (8x cheaper per token here) is chosen."""
    design = {EBT: FIVE, TPP: FIVE}
    batch = choose_batch(design, [8.0], tokens, ALPHA, 0.02, batch=1, min_distinct=5)
    assert batch and batch[0].candidate.family == TPP


def test_seeds_are_offered_only_from_min_distinct_x_and_never_beyond_the_budget() -> None:
    design = {EBT: FIVE[:3], TPP: FIVE}
    kinds = {(c.family, c.kind) for c in candidates(design, FIVE, flat, min_distinct=5)}
    assert (EBT, "seed") not in kinds and (TPP, "seed") in kinds and (EBT, "new x") in kinds
    batch = choose_batch(design, [*FIVE, 16.0], tokens, ALPHA, 0.02, batch=20, budget=30.0)
    assert sum(c.candidate.cost for c in batch) <= 30.0
    assert choose_batch(design, FIVE, tokens, ALPHA, 0.02, batch=5, budget=0.5) == []


def test_a_family_without_a_slope_cannot_start_a_round() -> None:
    with pytest.raises(FitError, match="at least 3 trials"):
        choose_batch({EBT: [1.0, 2.0], TPP: FIVE}, FIVE, flat, ALPHA, 0.02, batch=1)
    assert expected_width({EBT: [2.0, 2.0, 2.0], TPP: FIVE}, ALPHA, 0.02) == math.inf


def test_the_expected_width_tracks_the_measured_one() -> None:
    """Known truth: over simulated studies of a uniform design, the median width of the report's own
    interval (measure: Huber fits, cluster bootstrap) is within 35% of the expected width the scoring uses
    (least squares under the same resampling), and it about doubles with the noise."""
    x = {f: np.repeat(np.geomspace(1.28e5, 1.024e6, 6), 2) for f in (EBT, TPP)}
    alpha = {EBT: 0.1, TPP: 0.073}
    rng = np.random.default_rng(7)
    widths = []
    for r in range(25):
        y = {f: draw_losses(x[f], alpha[f], 0.02, rng, 1.28e5) for f in (EBT, TPP)}
        rel = measure(x, y, bootstrap=200, seed=r).relative
        widths.append(rel.hi - rel.lo)
    expected = expected_width(x, alpha, 0.02)
    assert float(np.median(widths)) == pytest.approx(expected, rel=0.35)
    assert expected_width(x, alpha, 0.04) == pytest.approx(2 * expected, rel=0.2)  # a ratio: not exactly


def test_point_fits_recover_the_exponents_and_the_noise() -> None:
    rng = np.random.default_rng(3)
    x = {f: np.repeat(np.geomspace(1e3, 1e6, 10), 4) for f in (EBT, TPP)}
    y = {EBT: draw_losses(x[EBT], 0.2, 0.03, rng, 1e3), TPP: draw_losses(x[TPP], 0.1, 0.03, rng, 1e3)}
    alphas, noise = point_fits(x, y)
    assert alphas[EBT] == pytest.approx(0.2, abs=0.01) and alphas[TPP] == pytest.approx(0.1, abs=0.01)
    assert noise == pytest.approx(0.03, rel=0.2)
    alphas, _ = point_fits({EBT: [2.0, 2.0], TPP: x[TPP]}, {EBT: [5.0, 5.1], TPP: y[TPP]})
    assert math.isnan(alphas[EBT])


def _study(n_x: int = 6) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    x = {f: np.geomspace(1.0, 8.0, n_x) for f in (EBT, TPP)}
    return x, {EBT: draw_losses(x[EBT], 0.12, 0.02, rng, 1.0), TPP: draw_losses(x[TPP], 0.08, 0.02, rng, 1.0)}


def test_a_round_stops_at_the_target_width_and_says_so() -> None:
    x, y = _study()
    done = next_round(x, y, [16.0], tokens, batch=2, budget_left=1e9, target_width=100.0, bootstrap=100)
    assert done.stop == STOP_TARGET and done.chosen == [] and done.width <= 100.0
    assert done.relative is not None and done.relative.lo < done.relative.value < done.relative.hi
    more = next_round(x, y, [16.0], tokens, batch=2, budget_left=1e9, target_width=1e-6, bootstrap=100)
    assert more.stop is None and more.chosen and more.width > 1e-6
    # the expected widths are in the measured width's units: the first choice starts from it
    assert more.chosen[0].width_before == pytest.approx(more.width)
    assert more.chosen[-1].width_after < more.width
    unmeasured = next_round(x, y, [16.0], tokens, batch=2, budget_left=1e9)
    assert unmeasured.chosen[0].width_before == pytest.approx(
        expected_width(x, unmeasured.alphas, unmeasured.noise)
    )
    assert more.cost == sum(c.candidate.cost for c in more.chosen)


def test_a_round_says_whether_the_budget_or_the_candidates_ran_out() -> None:
    x, y = _study()
    broke = next_round(x, y, [16.0], tokens, batch=2, budget_left=1.0)
    assert broke.stop == STOP_BUDGET and broke.chosen == [] and math.isnan(broke.width)
    nothing = next_round(x, y, [], tokens, batch=2, budget_left=1e9)
    assert nothing.stop == STOP_NO_GAIN and nothing.chosen == []


def test_an_interval_at_level_zero_has_zero_width_and_a_higher_level_a_wider_one() -> None:
    """The width is between the (1 - level)/2 and (1 + level)/2 percentiles of the simulated draws."""
    x = {f: np.geomspace(1.0, 8.0, 6) for f in (EBT, TPP)}
    assert expected_width(x, ALPHA, 0.02, level=1e-9) == pytest.approx(0.0, abs=1e-6)
    assert expected_width(x, ALPHA, 0.02, level=0.5) < expected_width(x, ALPHA, 0.02, level=0.95)
