"""Identifiability flags on known cases: at a bound, too wide, zero width, crossing zero; and the advice."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.identify import MAX_SPAN, NO_FLOOR, Flag, _span_flag, advice, identifiability
from analysis.laws import FORMS


@pytest.mark.parametrize(
    ("value", "lo", "hi", "kind", "detail"),
    [
        (1.0, 0.5, 2.0, None, None),
        (1.0, 0.5, 0.5 * MAX_SPAN, None, None),  # exactly two decades: not flagged
        (1.0, 0.5, 0.51 * MAX_SPAN, "wide", "alpha's interval [0.5, 51] spans 2.0 decades"),
        (-1.0, -0.51 * MAX_SPAN, -0.5, "wide", "alpha's interval [-51, -0.5] spans 2.0 decades"),
        (0.1, 1e-4, 10.0, "wide", "alpha's interval [0.0001, 10] spans 5.0 decades"),
        (0.1, -0.2, 0.3, "wide", "alpha's interval [-0.2, 0.3] crosses zero: not even its sign is known"),
        (0.1, 0.0, 0.3, "wide", "crosses zero"),
        (2.0, 2.0, 2.0 + 1e-7, "degenerate", "alpha has a zero-width interval [2, 2]"),
        (2.0, 2.0, 2.0 + 1e-5, None, None),
        (0.0, 0.0, 0.0, "degenerate", "zero-width"),
        (1.0, float("nan"), float("nan"), None, None),
        (1.0, 0.5, float("inf"), None, None),
    ],
)
def test_an_interval_is_flagged_by_its_span(value, lo, hi, kind, detail):
    flag = _span_flag("alpha", value, lo, hi, "alpha")
    if kind is None:
        assert flag is None
    else:
        assert flag is not None and flag.param == "alpha" and flag.kind == kind and not flag.stated
        assert detail in flag.detail


def _theta(law, **natural):
    """Natural parameters in the fit's layout (law.split): log coefficients, log E, exponents."""
    a = np.log([[natural[c] for c in law.coef_names]])
    e = np.log([natural[law.constant_name]]) if law.constant_name else None
    return law.join(a, e, np.array([[natural[x] for x in law.exponent_names]]))[0]


def test_a_floor_the_data_do_not_show_and_a_stated_bound_are_flagged_as_at_bound():
    law = FORMS["saturating"].with_bounds({"alpha": (0.0, 0.5)})
    theta = _theta(law, E=1e-12, A=50.0, alpha=0.5)
    y = np.array([4.0, 3.0, 2.0])
    flags = identifiability(law, theta, np.empty((0, 3)), np.array([np.log(1e6)]), y, 0.95)
    assert set(flags) == {"E", "alpha"}
    (e,) = flags["E"]
    assert e.kind == "at_bound" and not e.stated and "sits at its lower bound 0" in e.detail
    (a,) = flags["alpha"]
    assert a.kind == "at_bound" and a.stated and a.detail == "alpha = 0.5 sits at its upper bound 0.5"


@pytest.mark.parametrize(("lowest", "flagged"), [(0.5 * NO_FLOOR, True), (2 * NO_FLOOR, False)])
def test_a_floor_whose_interval_reaches_near_zero_is_not_shown_by_the_data(lowest, flagged):
    """E = 2% of the typical loss, its draws spread down to `lowest` x the typical loss: a floor whose
    interval reaches under 1% of the loss is not told from no floor; one whose interval stays above it is."""
    law = FORMS["saturating"]
    y = np.array([4.0, 2.0, 1.0])  # typical (geometric mean) 2.0
    theta = _theta(law, E=0.04, A=50.0, alpha=0.3)
    draws = np.repeat(theta[None, :], 200, axis=0)
    e = 1  # the layout is log A, log E, alpha
    assert np.exp(theta[e]) == pytest.approx(0.04)
    draws[:, e] = np.log(np.linspace(lowest * 2.0 * 0.9, 0.08, 200))  # the 2.5th percentile below `lowest`
    draws[:, 2] += np.linspace(-0.01, 0.01, 200)  # alpha pinned, not degenerate
    draws[:, 0] += np.linspace(-0.01, 0.01, 200)
    flags = identifiability(law, theta, draws, np.array([np.log(1e4)]), y, 0.95)
    if flagged:
        (f,) = flags["E"]
        assert f.kind == "at_bound" and not f.stated and "the data do not show a floor" in f.detail
    else:
        assert "E" not in flags


def test_clean_draws_raise_no_flag_and_wide_draws_flag_the_exponent_only():
    law = FORMS["saturating"]
    rng = np.random.default_rng(0)
    theta = _theta(law, E=1.5, A=50.0, alpha=0.3)
    tight = theta + 0.01 * rng.standard_normal((200, 3))
    y = np.array([4.0, 3.0, 2.0])
    centre = np.array([np.log(1e4)])
    assert identifiability(law, theta, tight, centre, y, 0.95) == {}
    loose = tight.copy()
    loose[:, 2] = 0.3 + 0.5 * rng.standard_normal(200)  # alpha's sign unknown
    flags = identifiability(law, theta, loose, centre, y, 0.95)
    assert "alpha" in flags and flags["alpha"][0].kind == "wide"
    assert "crosses zero" in flags["alpha"][0].detail
    # at a level so low that the interval no longer reaches zero, the same draws pass
    assert "alpha" not in identifiability(law, theta, loose, centre, y, 0.05)
    # a coefficient the draws do not pin down (its log spread by 3): its term's size spans decades
    coef = tight.copy()
    coef[:, law.coef_names.index("A")] += 3 * rng.standard_normal(200)
    (a_flag,) = identifiability(law, theta, coef, centre, y, 0.95)["A"]
    assert a_flag.kind == "wide" and a_flag.detail.startswith("A's term (at the data's centre)'s interval [")


def test_a_vanished_term_is_judged_at_the_data_s_centre():
    law = FORMS["chinchilla"]
    theta = _theta(law, E=1.7, A=400.0, B=1e-9, alpha=0.34, beta=0.28)
    centre = np.log([1e8, 1e10])
    flags = identifiability(law, theta, np.empty((0, 5)), centre, np.array([3.0, 2.5, 2.0]), 0.95)
    assert set(flags) == {"B"}
    assert flags["B"][0].kind == "at_bound" and "B's term (at the data's centre)" in flags["B"][0].detail


def test_advice_asks_for_larger_x_for_a_floor_and_a_wider_range_for_an_exponent():
    law = FORMS["chinchilla"]
    X = np.array([[1e6, 1e9], [1e7, 1e9], [1e8, 2e9], [1e8, 4e9]])
    floor = {"E": (Flag("E", "at_bound", "E at 0"),)}
    assert advice(law, floor, ("N", "D"), X) == (
        "add points at larger N (now 3 distinct, up to 1e+08) and larger D (now 3 distinct, up to 4e+09)"
    )
    beta = {"beta": (Flag("beta", "wide", "beta wide"),)}
    assert advice(law, beta, ("N", "D"), X) == (
        "add points at more D values over a wider range (now 3 distinct, 1e+09 to 4e+09)"
    )
    stated = {"alpha": (Flag("alpha", "at_bound", "at 0.5", stated=True),)}
    assert (
        advice(law, stated, ("N", "D"), X)
        == "widen or drop the bound on alpha: it decides the fit, not the data"
    )
    both = {**beta, **stated}
    assert advice(law, both, ("N", "D"), X).endswith(
        "; widen or drop the bound on alpha: it decides the fit, not the data"
    )
    assert advice(law, {}, ("N", "D"), X) == ""


def test_a_flag_s_record_is_its_kind_and_detail():
    assert Flag("E", "at_bound", "E = 0 sits at its lower bound 0").to_dict() == {
        "kind": "at_bound",
        "detail": "E = 0 sits at its lower bound 0",
    }
