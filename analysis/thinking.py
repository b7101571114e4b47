"""System-2 thinking as the EBT paper measures it: the percentage reduction of perplexity that extra forward
passes per token buy, relative to the same model's perplexity at one forward pass (System-1), on the
validation split and on out-of-distribution text, and whether the gain grows out of distribution. (The
curves themselves are run by model/thinking.py, through `ebtscale think`.)

Input: a tidy thinking table (`analysis.data.tidy_thinking`). Forward passes per token are the table's
`forward_passes` (EBT: steps, or steps × candidates with self-verification). Transformer++ predicts in one
forward pass and cannot spend more: its rows repeat that one measurement, so its reduction is 0% at every
budget by construction (the reference line, not a measurement of thinking).

Intervals: EBT rows that carry per-window losses (`window_nll`, `window_tokens`) are resampled over windows
(a percentile bootstrap; the rows of one split share each draw, so a reduction and its reference move
together; the two splits are drawn independently). Windows are consecutive slices of a packed stream, so
neighbours can share a document: the interval treats them as independent and is somewhat optimistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.data import EBT, EBT_LABEL, TPP_LABEL, family_label
from analysis.fit import DEFAULT_BOOTSTRAP, DEFAULT_LEVEL, ParamEstimate, Seed
from analysis.text import pct, points

SPLITS: tuple[str, ...] = ("val", "ood")
SPLIT_LABELS: dict[str, str] = {"val": "validation", "ood": "out of distribution"}
MODE_LABELS: dict[str, str] = {"steps": "thinking longer", "verify": "self-verification"}
REFERENCE = (
    "the same model's perplexity on the same split at 1 forward pass per token (steps 1, candidates 1)"
)

CURVE_COLUMNS = [
    "split",
    "source",
    "family",
    "mode",
    "steps",
    "candidates",
    "forward_passes",
    "perplexity",
    "reduction",
    "reduction_lo",
    "reduction_hi",
]


@dataclass(frozen=True)
class OodShift:
    """One EBT mode at the largest forward-pass count both splits have: its perplexity reduction on each
    split and the difference OOD − validation (fractions; 0.021 = 2.1 percentage points). `grows`: True when
    the difference's interval is above zero, False when below, None when it includes zero or has none."""

    mode: str
    forward_passes: float
    val: ParamEstimate
    ood: ParamEstimate
    difference: ParamEstimate
    grows: bool | None
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "forward_passes": self.forward_passes,
            "val": self.val.to_dict(),
            "ood": self.ood.to_dict(),
            "difference": self.difference.to_dict(),
            "grows": self.grows,
            "verdict": self.verdict,
        }


@dataclass
class System2:
    """Every System-2 number of the report: `curves` (CURVE_COLUMNS, one row per split, family, mode and
    budget), the OOD-vs-validation comparison per EBT mode, the text of each split, notes, the verdict."""

    curves: pd.DataFrame
    shifts: dict[str, OodShift]
    sources: dict[str, str]
    level: float
    bootstrap: int
    notes: list[str] = field(default_factory=list)
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        """summary.json's `system2` (keys documented in docs/analysis.md)."""
        curves = []
        for r in self.curves.itertuples(index=False):
            est = ParamEstimate(r.reduction, r.reduction_lo, r.reduction_hi)
            curves.append(
                {
                    "split": r.split,
                    "source": r.source,
                    "family": r.family,
                    "mode": r.mode,
                    "steps": int(r.steps),
                    "candidates": int(r.candidates),
                    "forward_passes": float(r.forward_passes),
                    "perplexity": float(r.perplexity),
                    "reduction": est.to_dict(),
                }
            )
        return {
            "reference": REFERENCE,
            "level": self.level,
            "bootstrap": self.bootstrap,
            "sources": self.sources,
            "curves": curves,
            "ood_vs_val": {m: s.to_dict() for m, s in self.shifts.items()},
            "notes": self.notes,
            "verdict": self.verdict,
        }


def _windows(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(nll (rows, windows), tokens (windows,)) when every row carries the same windows, else None."""
    if "window_nll" not in rows.columns:
        return None
    lists = rows["window_nll"].tolist()
    tokens = rows["window_tokens"].tolist()
    if any(not isinstance(v, list | tuple | np.ndarray) or len(v) == 0 for v in [*lists, *tokens]):
        return None
    if len({len(v) for v in [*lists, *tokens]}) != 1:
        return None
    nll, tok = np.asarray(lists, dtype=float), np.asarray(tokens[0], dtype=float)
    if tok.sum() <= 0:
        return None
    return nll, tok


def _draws(rows: pd.DataFrame, ref_idx: int, bootstrap: int, rng: np.random.Generator) -> np.ndarray | None:
    """(bootstrap, rows) reductions vs the reference row, from one resampling of the windows; None without
    per-window losses."""
    win = _windows(rows)
    if win is None or bootstrap < 1:
        return None
    nll, tok = win
    n = tok.size
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(float)  # (B, windows)
    mean_nll = (weights @ nll.T) / (weights @ tok)[:, None]  # (B, rows) token-weighted loss per draw
    return 1.0 - np.exp(mean_nll - mean_nll[:, [ref_idx]])


def _interval(draws: np.ndarray | None, level: float) -> tuple[float, float]:
    if draws is None or draws.size == 0:
        return math.nan, math.nan
    q = (1 - level) / 2
    lo, hi = np.quantile(draws, [q, 1 - q])
    return float(lo), float(hi)


def _with_ci(est: ParamEstimate, unit: str, level: float) -> str:
    fmt = pct if unit == "%" else points
    text = fmt(est.value) + (" points" if unit == "pp" else "")
    if math.isfinite(est.lo) and math.isfinite(est.hi):
        text += f" ({level:.0%} CI {fmt(est.lo)} to {fmt(est.hi)})"
    return text


def system2(
    thinking: pd.DataFrame,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: Seed = 0,
) -> System2:
    """Perplexity reduction per split, family, mode and forward-pass budget, with window-bootstrap
    intervals for the EBT, and the OOD-vs-validation shift of each EBT mode (see the module docstring)."""
    rng = np.random.default_rng(seed)
    curves, notes, draws_by = [], [], {}
    sources = {}
    for (split, fam), grp in thinking.groupby(["split", "family"], sort=True):
        grp = grp.sort_values(["mode", "forward_passes"]).reset_index(drop=True)
        sources.setdefault(split, str(grp["source"].iloc[0]))
        ref = grp.index[(grp["forward_passes"] == 1) & (grp["steps"] == 1) & (grp["candidates"] == 1)]
        if len(ref) == 0:
            notes.append(f"{family_label(fam)} on {split}: no 1-forward-pass row to measure reductions from")
            continue
        ref_idx = int(ref[0])
        reduction = 1.0 - grp["val_perplexity"] / grp["val_perplexity"].iloc[ref_idx]
        draws = _draws(grp, ref_idx, bootstrap, rng) if fam == EBT else None
        for i, r in grp.iterrows():
            lo, hi = _interval(None if draws is None else draws[:, i], level)
            if fam != EBT:  # cannot think: the same measurement at every budget, 0% exactly
                lo = hi = float(reduction.iloc[i])
            keys = ("split", "source", "family", "mode", "steps", "candidates", "forward_passes")
            row = {k: r[k] for k in keys} | {"perplexity": r["val_perplexity"]}
            curves.append(
                row | {"reduction": float(reduction.iloc[i]), "reduction_lo": lo, "reduction_hi": hi}
            )
            if fam == EBT:
                draws_by[split, r["mode"], float(r["forward_passes"])] = (
                    float(reduction.iloc[i]),
                    None if draws is None else draws[:, i],
                )
    table = pd.DataFrame(curves, columns=CURVE_COLUMNS)
    order = {split: i for i, split in enumerate(SPLITS)}  # validation first, then OOD, then any other
    table = table.sort_values(
        ["split", "family", "mode", "forward_passes"],
        key=lambda c: c.map(order).fillna(len(order)) if c.name == "split" else c,
    ).reset_index(drop=True)
    shifts = _shifts(draws_by, level)
    out = System2(table, shifts, sources, level, bootstrap, notes)
    out.verdict = _verdict(out)
    return out


def _shifts(draws_by: dict, level: float) -> dict[str, OodShift]:
    """Per EBT mode, the reductions at the largest budget both splits reach, and their difference."""
    shifts = {}
    for mode in ("steps", "verify"):
        budgets = [{fp for (s, m, fp) in draws_by if s == split and m == mode} for split in SPLITS]
        common = budgets[0] & budgets[1]
        if not common:
            continue
        fp = max(common)
        (val, val_d), (ood, ood_d) = draws_by["val", mode, fp], draws_by["ood", mode, fp]
        diff_d = ood_d - val_d if val_d is not None and ood_d is not None else None
        ests = [
            ParamEstimate(v, *_interval(d, level))
            for v, d in ((val, val_d), (ood, ood_d), (ood - val, diff_d))
        ]
        d = ests[2]
        grows = True if d.lo > 0 else False if d.hi < 0 else None
        head = f"{MODE_LABELS[mode]} to {fp:g} forward passes"
        body = (
            f"{head}: perplexity reduction {_with_ci(ests[0], '%', level)} on validation text, "
            f"{_with_ci(ests[1], '%', level)} out of distribution"
        )
        if ests[0].value < 0 and ests[1].value < 0:
            body += " (negative on both: thinking makes this model's perplexity worse)"
        if grows is True:
            tail = f"the gain grows out of distribution by {_with_ci(d, 'pp', level)}"
        elif grows is False:
            tail = f"the gain shrinks out of distribution, by {_with_ci(d, 'pp', level)}"
        elif math.isfinite(d.lo):
            tail = f"no significant difference out of distribution: {_with_ci(d, 'pp', level)} includes zero"
        else:
            tail = f"difference {points(d.value)} points (no interval: no per-window losses)"
        shifts[mode] = OodShift(mode, fp, *ests, grows, f"{body}: {tail}.")
    return shifts


def _verdict(s: System2) -> str:
    """The report's System-2 line: the EBT's gain on each split and whether it grows out of distribution."""
    if not s.shifts:
        splits = list(dict.fromkeys(s.curves.loc[s.curves["family"] == EBT, "split"]))  # validation first
        if not splits:
            return f"System-2: no {EBT_LABEL} curves to compare."
        have = ", ".join(SPLIT_LABELS.get(k, k) for k in splits)
        return f"System-2: {EBT_LABEL} curves on {have} text only; no out-of-distribution comparison."
    ood = s.sources.get("ood", "")
    text = (
        f"System-2 ({EBT_LABEL}; % perplexity reduction against 1 forward pass per token; validation: "
        f"{s.sources.get('val', '')}, out of distribution: {ood}; {TPP_LABEL} cannot think: 0% at every "
        "budget): "
    )
    text += " ".join(shift.verdict[0].upper() + shift.verdict[1:] for shift in s.shifts.values())
    return text
