"""The tidy trials table: schema validation, numeric casting, which rows enter fits and which are excluded.

The orchestrator hands over one row per trial, often read back from MLflow where every param is a string,
so `tidy_trials` is the single place that turns that into typed columns; everything downstream assumes
its output.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from analysis.errors import SchemaError
from model import family_ids

# The family the study measures and its baseline, as the table's `family` column names them. Their names
# and labels are the model registry's (model/family_ids.py, torch-free): a renamed family stays one edit.
EBT, TPP = family_ids.EBT.name, family_ids.TRANSFORMER_PP.name
EBT_LABEL, TPP_LABEL = family_ids.EBT.label, family_ids.TRANSFORMER_PP.label

# The x column each axis is fitted against (Kaplan's N, non-embedding, for the size axes).
AXIS_X: dict[str, str] = {
    "data": "tokens",
    "batch": "batch_size",
    "params": "n_params_non_embedding",
    "width": "n_params_non_embedding",
    "depth": "n_layers",
    "flops": "flops",
}
AXIS_ORDER: tuple[str, ...] = ("data", "params", "width", "depth", "batch", "flops")

STRING_COLUMNS: tuple[str, ...] = ("trial_id", "name", "family", "axis", "status", "status_reason")
NUMERIC_COLUMNS: tuple[str, ...] = (
    "n_params",
    "n_params_non_embedding",
    "tokens",
    "batch_size",
    "n_layers",
    "d_model",
    "flops",
    "flops_budget",
    "val_loss",
    "val_perplexity",
    "seed",
)
REQUIRED_COLUMNS: tuple[str, ...] = STRING_COLUMNS + NUMERIC_COLUMNS

# Optional: what training cost, for the equal-compute and equal-time views. A table without them (an older
# sweep) still analyses; the views then fall back to `flops` or report that time is missing.
COST_COLUMNS: tuple[str, ...] = ("flops_executed", "train_time_s", "num_workers")
# Optional: the model's vocabulary, for the learning check (analysis/learning.py: a loss near ln V has not
# learned). A table without it still analyses; the check then says it was not made.
VOCAB_COLUMN = "vocab_size"

# The views of every axis: loss against the axis' own x, against the training FLOPs each trial executed,
# and against device time (train_time_s x num_workers: worker-seconds, comparable within one sweep on one
# kind of hardware). `train_flops` and `device_seconds` are derived by tidy_trials.
VIEWS: tuple[str, ...] = ("x", "flops", "time")
VIEW_X: dict[str, str] = {"flops": "train_flops", "time": "device_seconds"}
VIEW_LABELS: dict[str, str] = {"x": "per axis x", "flops": "per training FLOP", "time": "per device-second"}

THINKING_STRING_COLUMNS: tuple[str, ...] = ("family", "mode")
THINKING_NUMERIC_COLUMNS: tuple[str, ...] = (
    "steps",
    "candidates",
    "forward_passes",
    "val_loss",
    "val_perplexity",
)

EXCLUDED_COLUMNS: list[str] = ["name", "family", "axis", "status", "reason"]

# Spellings of "no value" from MLflow / CSV round trips; any other non-number is an error.
_MISSING = {"", "nan", "none", "null", "na", "n/a", "<na>"}


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{what} is missing required column(s): {', '.join(missing)}")


def numeric_column(col: pd.Series, name: str) -> pd.Series:
    """Cast to float64; missing spellings become NaN, any other unparseable value is an error naming it."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return col.astype("float64")
    text = col.astype("string").str.strip()
    missing = text.isna() | text.str.lower().isin(_MISSING)
    values = pd.to_numeric(text.mask(missing), errors="coerce")
    bad = values.isna() & ~missing
    if bad.any():
        examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
        raise SchemaError(f"column {name!r} has non-numeric value(s): {examples}")
    return values.astype("float64")


def _to_string(col: pd.Series) -> pd.Series:
    return col.astype("string").fillna("").str.strip().astype(object)


def _cast(df: pd.DataFrame, strings: Iterable[str], numerics: Iterable[str], what: str) -> pd.DataFrame:
    _require(df, [*strings, *numerics], what)
    out = df.copy()
    for c in strings:
        out[c] = _to_string(out[c])
    for c in numerics:
        out[c] = numeric_column(out[c], c)
    return out.reset_index(drop=True)


def tidy_trials(df: pd.DataFrame) -> pd.DataFrame:
    """Validate and type a trials table: required columns present (SchemaError naming the missing ones),
    numerics as float64, strings stripped, `family`/`axis`/`status` lower-case. Extra columns are kept."""
    out = _cast(df, STRING_COLUMNS, NUMERIC_COLUMNS, "trials table")
    for c in ("family", "axis", "status"):
        out[c] = out[c].str.lower()
    for c in (*COST_COLUMNS, VOCAB_COLUMN):
        out[c] = numeric_column(out[c], c) if c in out.columns else np.nan
    return add_cost_columns(out)


def add_cost_columns(trials: pd.DataFrame) -> pd.DataFrame:
    """`train_flops`: the executed count where the table has one, else the study's `flops` convention
    (`train_flops_source` says which, per row: they differ for an EBT that reuses observed keys/values);
    `device_seconds`: train_time_s x num_workers (one worker per device; 1 when num_workers is missing)."""
    executed = trials["flops_executed"].where(trials["flops_executed"] > 0)
    workers = trials["num_workers"].where(trials["num_workers"] > 0, 1.0)
    return trials.assign(
        train_flops=executed.fillna(trials["flops"]),
        train_flops_source=np.where(executed.notna(), "executed", "study convention"),
        device_seconds=trials["train_time_s"] * workers,
    )


def tidy_thinking(df: pd.DataFrame) -> pd.DataFrame:
    """Validate and type a System-2 thinking table (family, mode, steps, candidates, forward_passes, ...).
    Optional: `split` ("val" when missing: a table from before out-of-distribution evaluation), `source`
    (the text evaluated), and per EBT row `window_nll` / `window_tokens` (lists, kept as they are)."""
    out = _cast(df, THINKING_STRING_COLUMNS, THINKING_NUMERIC_COLUMNS, "thinking table")
    for c in THINKING_STRING_COLUMNS:
        out[c] = out[c].str.lower()
    out["split"] = _to_string(out["split"]).str.lower().replace("", "val") if "split" in out else "val"
    out["source"] = _to_string(out["source"]) if "source" in out else ""
    return out


def exclusion_reasons(trials: pd.DataFrame, y: str = "val_loss") -> pd.Series:
    """Why each row of a tidy trials table cannot enter a fit ('' when it can): not finished, unknown axis,
    or a missing / non-positive x or y. Non-finished rows carry their status and status_reason.

    Column-wise (a report calls this once per axis, on every row of the sweep): only the excluded rows'
    messages are formatted one by one."""
    if y not in trials.columns:
        raise SchemaError(f"trials table has no column {y!r} to fit")
    out = np.full(len(trials), "", dtype=object)
    status = trials["status"].to_numpy()
    pending = status == "finished"  # rows with no reason yet
    for i in np.flatnonzero(~pending):
        detail = trials["status_reason"].iat[i]
        out[i] = f"{status[i]}: {detail}" if detail else str(status[i])
    x_cols = np.array([AXIS_X.get(a) for a in trials["axis"]], dtype=object)
    unknown = pending & np.array([c is None for c in x_cols], dtype=bool)
    for i in np.flatnonzero(unknown):
        out[i] = f"unknown axis {trials['axis'].iat[i]!r}"
    pending &= ~unknown
    for x_col in dict.fromkeys(AXIS_X.values()):
        rows = pending & (x_cols == x_col)
        if not rows.any():  # an axis absent from the table need not have its x column
            continue
        for col in (x_col, y):
            values = trials[col].to_numpy()
            missing = rows & ~np.isfinite(values)
            out[missing] = f"{col} is missing"
            rows &= ~missing
            not_positive = rows & (values <= 0)
            for i in np.flatnonzero(not_positive):
                out[i] = f"{col} = {values[i]:g} is not positive"
            rows &= ~not_positive
    return pd.Series(out, index=trials.index, dtype=object)


def split_trials(trials: pd.DataFrame, y: str = "val_loss") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows that enter fits, excluded-trials table with columns name, family, axis, status, reason)."""
    reasons = exclusion_reasons(trials, y)
    ok = reasons == ""
    excluded = trials.loc[~ok, ["name", "family", "axis", "status"]].assign(reason=reasons[~ok])
    return trials[ok].reset_index(drop=True), excluded[EXCLUDED_COLUMNS].reset_index(drop=True)


def axes_present(trials: pd.DataFrame) -> list[str]:
    """Axes of the table in reading order (known axes first, unknown ones are ignored)."""
    present = set(trials["axis"])
    return [a for a in AXIS_ORDER if a in present]


def family_label(family: str) -> str:
    """How the report writes a family: its registry label ("Transformer++"), an unknown name as it is."""
    known = family_ids.FAMILY_IDS.get(family)
    return known.label if known else family
