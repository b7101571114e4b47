"""The report's tuning section: per family and model size, the loss of every sampled configuration against
each searched value, the chosen value, and a warning where it sits at the edge of the searched range (the
optimum may lie outside it). Input: a tidy table, one row per tuning trial and knob (`TUNING_COLUMNS`);
this module knows nothing of how the search ran."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis.data import family_label

TUNING_COLUMNS = (
    "family",  # model family
    "size",  # e.g. "d32 L1"
    "trial",  # the tuning trial's name
    "status",  # finished | stopped | diverged | ...
    "val_loss",  # final (finished) or at the early stop (stopped)
    "steps",  # steps trained
    "total_steps",  # the tuning budget in steps
    "knob",  # lr | alpha | mcmc_steps | alpha_lr_multiplier
    "value",  # the knob's value in this trial
    "chosen",  # this trial is the size's choice
    "edge",  # "low" | "high" | "" : the chosen value's place in the searched range
)


def check_tuning_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in TUNING_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"tuning table lacks columns {missing}")


def plot_tuning(frame: pd.DataFrame) -> Figure:
    """One panel per (family and size, knob): validation loss against the value (log x). Filled: trained
    its whole budget; hollow: stopped early (loss at the stop); the star: the choice."""
    panels = list(frame.groupby(["family", "size", "knob"], sort=True))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, ((fam, size, knob), grp) in zip(axes.flat, panels, strict=False):
        done = grp[grp["status"] == "finished"]
        early = grp[grp["status"] != "finished"]
        ax.scatter(done["value"], done["val_loss"], color="C0", label="whole budget")
        ax.scatter(
            early["value"], early["val_loss"], facecolors="none", edgecolors="C1", label="stopped early"
        )
        best = grp[grp["chosen"]]
        ax.scatter(best["value"], best["val_loss"], marker="*", s=220, color="C3", label="chosen", zorder=3)
        if grp["value"].min() > 0:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short range overlap
        ax.set_xlabel(knob)
        ax.set_ylabel("validation loss")
        ax.set_title(f"{family_label(fam)} {size}")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def tuning_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per family and size: the chosen values and loss, trials by outcome, edge warnings (summary.json)."""
    out = []
    for (fam, size), grp in frame.groupby(["family", "size"], sort=True):
        trials = grp.drop_duplicates("trial")
        best = grp[grp["chosen"]]
        out.append(
            {
                "family": fam,
                "size": size,
                "chosen": {r.knob: r.value for r in best.itertuples()},
                "val_loss": float(best["val_loss"].iloc[0]) if len(best) else None,
                "trials": len(trials),
                "by_status": {
                    str(k): int(v) for k, v in trials["status"].value_counts().sort_index().items()
                },
                "edges": {r.knob: r.edge for r in best.itertuples() if r.edge},
            }
        )
    return out
