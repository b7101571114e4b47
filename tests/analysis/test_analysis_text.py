"""analysis/text.py: every number the report writes, and the one mark for a number that does not exist."""

from __future__ import annotations

import math

import pytest

from analysis.text import MISSING, fmt, pct, plus_minus, points


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (0.3598, 1, "+36.0%"),
        (0.3598, 0, "+36%"),
        (-0.0529, 2, "-5.29%"),
        (0.0, 1, "+0.0%"),
        (1.5, 0, "+150%"),
    ],
)
def test_a_fraction_is_a_signed_percentage(value: float, digits: int, text: str) -> None:
    assert pct(value, digits) == text


def test_the_defaults_are_one_decimal() -> None:
    assert (pct(0.11844), points(0.15), points(-0.004)) == ("+11.8%", "+15.0", "-0.4")
    assert plus_minus(0.236) == "±24%"  # a half-width: unsigned, whole percent
    assert plus_minus(0.7) == "±70%"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_number_that_does_not_exist_is_one_mark_everywhere(bad: float) -> None:
    assert MISSING == "–"
    assert pct(bad) == pct(bad, 0) == points(bad) == plus_minus(bad) == fmt(bad) == fmt(None) == MISSING


def test_table_numbers_keep_four_significant_digits() -> None:
    assert [fmt(v) for v in (1234.5678, 0.000123456, 3.0, -2.5e12)] == ["1235", "0.0001235", "3", "-2.5e+12"]
