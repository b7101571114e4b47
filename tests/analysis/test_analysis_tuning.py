"""The report's tuning section (analysis/tuning.py): per family and size the chosen values, outcomes and edge
warnings, one plot panel per family, size and knob, and the summary.json key."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis import write_report
from analysis.options import AnalysisOptions
from analysis.tuning import TUNING_COLUMNS, check_tuning_frame, plot_tuning, tuning_rows
from tests.analysis.synthetic_scaling import make_trials


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
