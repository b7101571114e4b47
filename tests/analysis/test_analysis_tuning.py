"""The report's tuning section (analysis/tuning.py): per family and size the chosen values, outcomes and edge
warnings, one plot panel per family, size and knob, and the summary.json key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from analysis import write_report
from analysis.options import AnalysisOptions
from analysis.tuning import TUNING_COLUMNS, check_tuning_frame, plot_tuning, tuning_rows
from tests.analysis.synthetic_scaling import make_trials

PANEL_INCHES = (4.2, 3.2)  # width, height of one panel of the tuning figure


def tuning_table() -> pd.DataFrame:
    """EBT searched over lr and alpha (chosen: the largest alpha, an edge), Transformer++ over lr alone."""
    rows = []
    ebt = [(3e-3, 50.0, "finished", 5.1), (1e-2, 500.0, "finished", 4.9), (3e-2, 5.0, "stopped", 5.6)]
    for i, (lr, alpha, status, loss) in enumerate(ebt):
        for knob, value in (("lr", lr), ("alpha", alpha)):
            chosen = i == 1
            edge = "high" if chosen and knob == "alpha" else ""
            rows.append(["ebt", "d32 L1", f"e{i}", status, loss, 64, 64, knob, value, chosen, edge])
    for i, (lr, status, loss) in enumerate([(1e-3, "stopped", 5.0), (8e-3, "finished", 4.1)]):
        rows.append(["transformer_pp", "d32 L1", f"t{i}", status, loss, 64, 64, "lr", lr, i == 1, ""])
    return pd.DataFrame(rows, columns=list(TUNING_COLUMNS))


def test_rows_give_each_sizes_choice_outcomes_and_edges() -> None:
    rows = {r["family"]: r for r in tuning_rows(tuning_table())}
    assert rows["ebt"]["chosen"] == {"lr": 1e-2, "alpha": 500.0} and rows["ebt"]["val_loss"] == 4.9
    assert rows["ebt"]["by_status"] == {"finished": 2, "stopped": 1} and rows["ebt"]["trials"] == 3
    assert rows["ebt"]["edges"] == {"alpha": "high"}
    assert rows["transformer_pp"]["chosen"] == {"lr": 8e-3} and rows["transformer_pp"]["edges"] == {}


def test_one_panel_per_family_size_and_knob() -> None:
    fig = plot_tuning(tuning_table())
    titled = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_xlabel() for ax in titled) == ["alpha", "lr", "lr"]
    with pytest.raises(ValueError, match="lacks columns"):
        check_tuning_frame(tuning_table().drop(columns=["edge"]))


def test_the_report_has_a_tuning_section_and_summary_key(tmp_path: Path) -> None:
    trials = make_trials(axes=("data",), n=5, noise=0.01)
    paths = write_report(trials, tmp_path, {}, options=AnalysisOptions(bootstrap=20), tuning=tuning_table())
    md = paths["markdown"].read_text()
    assert "## Tuning" in md and "alpha at the high edge of its range" in md
    assert (tmp_path / "plots" / "tuning.png").is_file()
    summary = json.loads(paths["summary"].read_text())
    assert {r["family"] for r in summary["tuning"]} == {"ebt", "transformer_pp"}
    untuned = write_report(trials, tmp_path / "plain", {}, options=AnalysisOptions(bootstrap=20))
    assert "## Tuning" not in untuned["markdown"].read_text()


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _panels(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_visible()]


def _markers(ax: Axes, label: str) -> PathCollection:
    (markers,) = [c for c in ax.collections if c.get_label() == label]
    return markers


def _plotted(ax: Axes, label: str) -> list[tuple[float, float]]:
    return sorted(map(tuple, _markers(ax, label).get_offsets().tolist()))


def _trials(rows: pd.DataFrame) -> list[tuple[float, float]]:
    return sorted(zip(rows["value"], rows["val_loss"], strict=True))


def test_each_panel_shows_its_trials_by_outcome_and_stars_the_choice() -> None:
    """Filled: trained the whole budget; hollow: stopped early; a star of its own colour on the chosen value;
    titled with the family's label and size; one legend, on the first panel."""
    table = tuning_table()
    fig = plot_tuning(table)
    seen = set()
    for ax in _panels(fig):
        fam = {"EBT d32 L1": "ebt", "Transformer++ d32 L1": "transformer_pp"}[ax.get_title()]
        grp = table[(table["family"] == fam) & (table["knob"] == ax.get_xlabel())]
        seen.add((fam, ax.get_xlabel()))
        assert _plotted(ax, "whole budget") == _trials(grp[grp["status"] == "finished"])
        assert _plotted(ax, "stopped early") == _trials(grp[grp["status"] != "finished"])
        assert _plotted(ax, "chosen") == _trials(grp[grp["chosen"]])
        filled, hollow, star = (_markers(ax, k) for k in ("whole budget", "stopped early", "chosen"))
        assert len(hollow.get_facecolors()) == 0 and len(filled.get_facecolors()) > 0
        colours = {tuple(filled.get_facecolors()[0]), tuple(hollow.get_edgecolors()[0])}
        assert tuple(star.get_facecolors()[0]) not in colours  # the choice stands out
    assert seen == {("ebt", "lr"), ("ebt", "alpha"), ("transformer_pp", "lr")}
    legends = [ax.get_legend() for ax in _panels(fig)]
    assert [t.get_text() for t in legends[0].get_texts()] == ["whole budget", "stopped early", "chosen"]
    assert legends[1:] == [None, None]


def test_panel_and_row_order_do_not_depend_on_the_tables_row_order() -> None:
    """Panels read family, size, knob in sorted order, and summary rows family then size, however the
    search happened to write its rows."""
    backwards = tuning_table().iloc[::-1].reset_index(drop=True)
    assert [(ax.get_title(), ax.get_xlabel()) for ax in _panels(plot_tuning(backwards))] == [
        ("EBT d32 L1", "alpha"),
        ("EBT d32 L1", "lr"),
        ("Transformer++ d32 L1", "lr"),
    ]
    assert tuning_rows(backwards) == tuning_rows(tuning_table())
    assert [r["family"] for r in tuning_rows(backwards)] == ["ebt", "transformer_pp"]


def test_a_searched_zero_keeps_the_value_axis_linear() -> None:
    """A log axis cannot show 0: a knob whose range includes it is drawn on a linear axis."""
    table = tuning_table()
    zero = table["knob"] == "alpha"
    table.loc[zero, "value"] = table.loc[zero, "value"] - table.loc[zero, "value"].min()
    scales = {
        ax.get_xlabel(): ax.get_xscale() for ax in _panels(plot_tuning(table)) if "EBT" in ax.get_title()
    }
    assert scales == {"alpha": "linear", "lr": "log"}


@pytest.mark.parametrize("n_panels, grid", [(1, (1, 1)), (4, (2, 3))])
def test_panels_keep_their_size_as_the_grid_grows(n_panels: int, grid: tuple[int, int]) -> None:
    """Up to three panels a row; each panel the same size in inches whatever their number (one panel too)."""
    rows = [
        ["ebt", f"d{32 * (i + 1)} L1", "e0", "finished", 4.0, 64, 64, "lr", 1e-3, True, ""]
        for i in range(n_panels)
    ]
    fig = plot_tuning(pd.DataFrame(rows, columns=list(TUNING_COLUMNS)))
    assert len(_panels(fig)) == n_panels
    width, height = fig.get_size_inches()
    assert (width / grid[1], height / grid[0]) == pytest.approx(PANEL_INCHES)


def test_each_panel_says_what_it_plots_and_the_choice_stands_out() -> None:
    """Every panel is titled by family and size, its axes by knob and validation loss, and the chosen
    configuration is a marker larger than every trial's."""
    fig = plot_tuning(tuning_table())
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_title() for ax in panels) == ["EBT d32 L1", "EBT d32 L1", "Transformer++ d32 L1"]
    for ax in panels:
        assert ax.get_ylabel() == "validation loss"
        chosen, *trials = sorted(
            (c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())),
            key=lambda c: c.get_label() != "chosen",
        )
        assert chosen.get_label() == "chosen" and len(chosen.get_offsets()) == 1
        assert min(chosen.get_sizes()) > max(max(c.get_sizes()) for c in trials)
    plt.close(fig)


def test_every_knob_at_an_edge_is_named_in_the_report(tmp_path: Path) -> None:
    """A choice at the edge of two ranges gets both warnings, each telling to widen its range."""
    table = tuning_table()
    table.loc[(table["family"] == "ebt") & table["chosen"] & (table["knob"] == "lr"), "edge"] = "low"
    trials = make_trials(axes=("data",), n=5, noise=0.01)
    paths = write_report(trials, tmp_path, {}, options=AnalysisOptions(bootstrap=0), tuning=table)
    lines = paths["markdown"].read_text().splitlines()
    row = next(line for line in lines if line.startswith("| EBT | d32 L1"))
    assert row.endswith(
        "| lr at the low edge of its range: widen it; alpha at the high edge of its range: widen it |"
    )
