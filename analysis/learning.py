"""Did every trial learn? A scaling rate compares trials that learned; a trial whose loss sits near the
uniform guess over its vocabulary (ln V nats per token) has not, and a law through it says little. The check:
a finished trial has learned when its validation loss is at most `LEARNED_FRACTION` of ln V.

On the flops axis the isoFLOP grid trains, by design, models too large for the smaller budgets; the
per-axis law is fitted on its frontier only (`compare.axis_points`), so the check says separately whether
every frontier point learned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.compare import axis_points
from analysis.data import VOCAB_COLUMN, axes_present, family_label

LEARNED_FRACTION = 0.8  # at least 20% below the uniform guess; on the stdlib BPE-512 corpus (ln V = 6.24)
# that is 4.99 nats, below its unigram entropy (5.34): the model uses its context


@dataclass
class LearningCheck:
    """Per axis and family: finished trials, how many learned, the worst loss (and its trial and ln V); the
    trials that did not learn; how many rows had no vocabulary size (not checked); the verdict sentence."""

    fraction: float
    table: pd.DataFrame  # axis, family, trials, learned, worst_loss, worst_name, uniform
    not_learned: pd.DataFrame  # name, family, axis, val_loss, uniform, fitted (a per-axis law's point)
    unchecked: int
    verdict: str = ""
    frontier_learned: bool | None = None  # flops axis: every frontier point learned (None: no flops axis)

    @property
    def all_learned(self) -> bool:
        return self.not_learned.empty and self.unchecked == 0 and not self.table.empty

    def to_dict(self) -> dict[str, Any]:
        """summary.json's `learning` (keys documented in docs/analysis.md)."""
        return {
            "fraction": self.fraction,
            "all_learned": self.all_learned,
            "frontier_learned": self.frontier_learned,
            "unchecked": self.unchecked,
            "per_axis": self.table.to_dict(orient="records"),
            "not_learned": self.not_learned.to_dict(orient="records"),
            "verdict": self.verdict,
        }


TABLE_COLUMNS = ["axis", "family", "trials", "learned", "worst_loss", "worst_name", "uniform"]
NOT_LEARNED_COLUMNS = ["name", "family", "axis", "val_loss", "uniform", "fitted"]


def learning_check(fit_rows: pd.DataFrame, fraction: float = LEARNED_FRACTION) -> LearningCheck:
    """The check on the rows that enter fits (`data.split_trials`' first table), by their `val_loss` and
    `vocab_size` (rows without a vocabulary size are counted as unchecked)."""
    vocab = fit_rows[VOCAB_COLUMN] if VOCAB_COLUMN in fit_rows else pd.Series(np.nan, index=fit_rows.index)
    known = np.isfinite(vocab) & (vocab > 1)
    rows = fit_rows[known].assign(uniform=np.log(vocab[known]))
    rows = rows[np.isfinite(rows["val_loss"])]
    learned = rows["val_loss"] <= fraction * rows["uniform"]
    frontier = set()
    if "flops" in set(rows["axis"]):
        frontier = set(axis_points(rows, "flops", "val_loss")["name"])
    table = []
    for axis in axes_present(rows):
        for fam, grp in rows[rows["axis"] == axis].groupby("family", sort=True):
            worst = grp.loc[(grp["val_loss"] / grp["uniform"]).idxmax()]
            table.append(
                {
                    "axis": axis,
                    "family": fam,
                    "trials": len(grp),
                    "learned": int(learned[grp.index].sum()),
                    "worst_loss": float(worst["val_loss"]),
                    "worst_name": str(worst["name"]),
                    "uniform": float(worst["uniform"]),
                }
            )
    missed = rows[~learned]
    missed = missed.assign(fitted=(missed["axis"] != "flops") | missed["name"].isin(frontier))
    out = LearningCheck(
        fraction,
        pd.DataFrame(table, columns=TABLE_COLUMNS),
        missed[NOT_LEARNED_COLUMNS].reset_index(drop=True),
        int((~known).sum()),
    )
    if frontier:
        out.frontier_learned = not bool(missed.loc[missed["axis"] == "flops", "fitted"].any())
    out.verdict = _verdict(out, len(rows))
    return out


def _verdict(c: LearningCheck, checked: int) -> str:
    bar = f"at most {c.fraction:.0%} of the uniform guess ln V"
    if checked == 0:
        return f"Learning check: not made ({c.unchecked} trial row(s) without a vocabulary size)."
    worst = c.table.loc[(c.table["worst_loss"] / c.table["uniform"]).idxmax()]
    at = (
        f"the worst: {family_label(worst['family'])} {worst['worst_loss']:.3g} nats ({worst['worst_name']}, "
        f"{worst['worst_loss'] / worst['uniform']:.0%} of ln V = {worst['uniform']:.3g})"
    )
    if c.not_learned.empty:
        text = f"Learning check: every one of the {checked} fitted trial rows learned (val_loss {bar}; {at})."
    else:
        names = ", ".join(c.not_learned["name"].head(5)) + (" …" if len(c.not_learned) > 5 else "")
        text = (
            f"Learning check: {len(c.not_learned)} of {checked} fitted trial rows did NOT learn (val_loss "
            f"above {c.fraction:.0%} of ln V): {names}; {at}."
        )
        if not c.not_learned["fitted"].any():
            text += (
                " All of them are isoFLOP grid points off its frontier (models too large for their budget, "
                "by design): every point a per-axis law is fitted on learned."
            )
    if c.unchecked:
        text += f" {c.unchecked} row(s) have no vocabulary size and were not checked."
    return text
