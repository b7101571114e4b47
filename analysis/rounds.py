"""The report's Design section: the adaptive rounds `sweep extend` ran on an axis, round by round, the
interval width against the training FLOPs added, which trials each round added and why, and why it stopped.
Input: a tidy table, one row per round (`ROUND_COLUMNS`); this module knows nothing of how rounds ran."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

ROUND_COLUMNS = (
    "round",  # 1, 2, ...; the last row may be the final measurement (no trials)
    "axis",  # the axis extended
    "flops_before",  # training FLOPs the rounds had added when this width was measured
    "width",  # the measured 95% interval width of the relative exponent difference (NaN: none)
    "expected_width",  # after this round's trials, as the scoring expected it (NaN on the final row)
    "flops",  # this round's trials' training FLOPs
    "added",  # the trials it added, "name (kind)" joined by ", "
    "stop",  # why the rounds stopped (on the last row), else ""
)


def check_round_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in ROUND_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"rounds table lacks columns {missing}")


def plot_rounds(frame: pd.DataFrame) -> Figure:
    """The measured width (solid) and each round's expected width after its trials (hollow) against the
    training FLOPs added, per axis."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for axis, grp in frame.groupby("axis", sort=True):
        measured = grp[grp["width"].notna()]
        ax.plot(measured["flops_before"], measured["width"], "o-", label=f"{axis}: measured")
        planned = grp[grp["expected_width"].notna()]
        ax.scatter(
            planned["flops_before"] + planned["flops"],
            planned["expected_width"],
            facecolors="none",
            edgecolors="C1",
            label=f"{axis}: expected after the round",
        )
    ax.set_xlabel("training FLOPs added by the rounds")
    ax.set_ylabel("95% interval width (relative difference)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def round_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rounds as JSON-ready records (summary.json)."""
    check_round_frame(frame)
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]
