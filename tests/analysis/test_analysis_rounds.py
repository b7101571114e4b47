"""The report's Design section (analysis/rounds.py): the adaptive rounds' widths against the FLOPs added,
the trials each round added and why, the stopping reason, and the summary.json key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from analysis import write_report
from analysis.options import AnalysisOptions
from analysis.rounds import ROUND_COLUMNS, check_round_frame, plot_rounds, round_rows
from tests.analysis.synthetic_scaling import make_trials


def rounds_table() -> pd.DataFrame:
    """Two rounds on the data axis, then the final measurement and the stop."""
    rows = [
        [1, "data", 0.0, 1.2, 0.9, 4e11, "tpp-D300K-s0 (new x), ebt-D300K-s0 (new x)", ""],
        [2, "data", 4e11, 0.95, 0.7, 2e11, "tpp-D128K-s1 (seed)", ""],
        [3, "data", 6e11, 0.72, math.nan, 0.0, "", "target width reached"],
    ]
    return pd.DataFrame(rows, columns=list(ROUND_COLUMNS))


def test_the_plot_draws_the_measured_widths_and_each_rounds_expectation() -> None:
    fig = plot_rounds(rounds_table())
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [0.0, 4e11, 6e11] and list(line.get_ydata()) == [1.2, 0.95, 0.72]
    (expected,) = ax.collections
    assert expected.get_offsets().tolist() == [[4e11, 0.9], [6e11, 0.7]]  # after each round's own FLOPs
    plt.close(fig)
    with pytest.raises(ValueError, match="lacks columns"):
        check_round_frame(rounds_table().drop(columns=["stop"]))


def test_the_report_has_a_design_section_with_the_stop_and_a_summary_key(tmp_path: Path) -> None:
    trials = make_trials(axes=("data",), n=5, noise=0.01)
    paths = write_report(trials, tmp_path, {}, options=AnalysisOptions(bootstrap=20), rounds=rounds_table())
    md = paths["markdown"].read_text()
    assert "## Design: adaptive rounds" in md and "Stopped: target width reached." in md
    assert "tpp-D128K-s1 (seed)" in md and (tmp_path / "plots" / "design.png").is_file()
    summary = json.loads(paths["summary"].read_text())
    assert summary["design"] == round_rows(rounds_table())
    assert summary["design"][-1]["expected_width"] is None and summary["design"][-1]["stop"]
    plain = write_report(trials, tmp_path / "plain", {}, options=AnalysisOptions(bootstrap=20))
    assert "## Design" not in plain["markdown"].read_text()


def test_the_plot_labels_its_axes_and_orders_each_extended_axis_by_name() -> None:
    """Two axes extended: their curves and legend entries in name order; the measured widths drawn as
    points joined by a line, the expectations as points."""
    two = pd.concat(
        [rounds_table().assign(axis="data"), rounds_table().assign(axis="batch")], ignore_index=True
    )
    fig = plot_rounds(two)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "batch: measured",
        "batch: expected after the round",
        "data: measured",
        "data: expected after the round",
    ]
    assert all(line.get_marker() == "o" and line.get_linestyle() == "-" for line in ax.get_lines())
    assert ax.get_xlabel() == "training FLOPs added by the rounds"
    assert ax.get_ylabel() == "95% interval width (relative difference)"
    plt.close(fig)
