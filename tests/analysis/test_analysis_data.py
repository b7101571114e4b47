"""tidy_trials: schema, casting of MLflow-style strings, and which trials are excluded from fits (and why)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.data import (
    AXIS_X,
    EBT,
    REQUIRED_COLUMNS,
    TPP,
    exclusion_reasons,
    family_label,
    split_trials,
    tidy_thinking,
    tidy_trials,
)
from analysis.errors import SchemaError
from model.family_ids import FAMILY_IDS
from tests.analysis.synthetic_scaling import make_thinking, make_trials


def test_string_numerics_are_cast_and_extra_columns_kept():
    raw = make_trials(axes=("data",), n=4)
    raw["sweep"] = "demo"  # an unknown extra column
    as_strings = raw.astype(str)  # what MLflow params look like
    as_strings.loc[0, "flops_budget"] = ""  # and its spellings of "missing"
    as_strings.loc[1, "flops_budget"] = "None"
    tidy = tidy_trials(as_strings)
    for col in ("tokens", "val_loss", "n_params", "seed", "flops"):
        assert tidy[col].dtype == np.float64
        assert np.allclose(tidy[col], raw[col].astype(float))
    assert tidy["flops_budget"].isna().all()
    assert (tidy["sweep"] == "demo").all()


def test_missing_columns_are_named():
    raw = make_trials(axes=("data",), n=3).drop(columns=["tokens", "status"])
    with pytest.raises(SchemaError) as err:
        tidy_trials(raw)
    assert "tokens" in str(err.value) and "status" in str(err.value)
    assert "val_loss" not in str(err.value)


def test_non_numeric_values_are_rejected_naming_the_column():
    raw = make_trials(axes=("data",), n=3).astype(str)
    raw.loc[2, "val_loss"] = "oops"
    with pytest.raises(SchemaError, match=r"'val_loss'.*'oops'"):
        tidy_trials(raw)
    many = make_trials(axes=("data",), n=5).astype(str)
    many["val_loss"] = ["a", "b", "c", "d", "e"] * 2  # five bad values: the message shows three, not a dump
    with pytest.raises(SchemaError) as err:
        tidy_trials(many)
    assert str(err.value) == "column 'val_loss' has non-numeric value(s): 'a', 'b', 'c'"


def test_family_axis_status_are_normalised():
    raw = make_trials(axes=("data",), n=3)
    raw["family"] = raw["family"].str.upper() + " "
    raw["status"] = " Finished"
    tidy = tidy_trials(raw)
    assert set(tidy["family"]) == {"ebt", "transformer_pp"}
    assert (tidy["status"] == "finished").all()


def test_excluded_trials_carry_status_and_reason():
    raw = make_trials(axes=("data",), n=5)
    raw.loc[0, ["status", "status_reason"]] = ["diverged", "loss is NaN at step 40"]
    raw.loc[1, ["status", "status_reason"]] = ["failed", ""]
    raw.loc[2, "val_loss"] = np.nan
    raw.loc[3, "tokens"] = 0
    raw.loc[4, "axis"] = "mystery"
    ok, excluded = split_trials(tidy_trials(raw))
    assert list(excluded.columns) == ["name", "family", "axis", "status", "reason"]
    reasons = dict(zip(excluded["name"], excluded["reason"], strict=True))
    assert reasons[raw.loc[0, "name"]] == "diverged: loss is NaN at step 40"
    assert reasons[raw.loc[1, "name"]] == "failed"
    assert "val_loss is missing" in reasons[raw.loc[2, "name"]]
    assert "tokens = 0 is not positive" in reasons[raw.loc[3, "name"]]
    assert "unknown axis" in reasons[raw.loc[4, "name"]]
    assert len(ok) == len(raw) - 5 and not set(ok["name"]) & set(excluded["name"])


def _reasons_row_by_row(trials: pd.DataFrame, y: str) -> list[str]:
    """The exclusion rules stated one row at a time (how exclusion_reasons was first written)."""
    out = []
    for _, row in trials.iterrows():
        reason = ""
        if row["status"] != "finished":
            reason = f"{row['status']}: {row['status_reason']}" if row["status_reason"] else row["status"]
        elif row["axis"] not in AXIS_X:
            reason = f"unknown axis {row['axis']!r}"
        else:
            for col in (AXIS_X[row["axis"]], y):
                if not np.isfinite(row[col]):
                    reason = f"{col} is missing"
                    break
                if row[col] <= 0:
                    reason = f"{col} = {row[col]:g} is not positive"
                    break
        out.append(reason)
    return out


def test_exclusion_reasons_follow_the_rules_on_every_axis():
    rng = np.random.default_rng(3)
    raw = make_trials(axes=("data", "params"), n=40, flops_axis=True)
    more = [raw.assign(axis=axis) for axis in ("depth", "batch", "width")]
    tidy = tidy_trials(pd.concat([raw, *more], ignore_index=True))
    n = len(tidy)
    for col, values in (("status", ["diverged", "failed"]), ("axis", ["mystery", ""])):
        hit = rng.random(n) < 0.08
        tidy.loc[hit, col] = rng.choice(values, hit.sum())
    tidy.loc[rng.random(n) < 0.5, "status_reason"] = "loss is NaN"
    for col in ("tokens", "n_params_non_embedding", "n_layers", "batch_size", "flops", "val_loss"):
        hit = rng.random(n) < 0.05
        tidy.loc[hit, col] = rng.choice([0.0, -2.5, np.nan, np.inf, -np.inf], hit.sum())
    tidy.index = rng.permutation(n) + 7  # labels need not be 0..n-1
    for y in ("val_loss", "tokens"):
        reasons = exclusion_reasons(tidy, y)
        assert reasons.index.equals(tidy.index)
        assert reasons.tolist() == _reasons_row_by_row(tidy, y)
    assert (reasons == "").sum() > n // 2 and reasons.str.contains("is not positive").any()
    assert exclusion_reasons(tidy.iloc[:0]).empty


def test_exclusion_reasons_on_a_large_sweep():
    """A report calls split_trials once per axis on the whole table (200,000 rows here): every missing loss
    is found. No wall-clock bound: a timed assertion fails on a loaded machine (and, under `make mutation`,
    would count a mutant as killed for the wrong reason); the column-wise code takes ~0.5 s here where a
    per-row loop took ~6 s."""
    trials = tidy_trials(pd.concat([make_trials(axes=("data", "params"), n=50)] * 1000, ignore_index=True))
    trials.loc[::97, "val_loss"] = np.nan
    reasons = exclusion_reasons(trials)
    assert (reasons == "val_loss is missing").sum() == len(range(0, len(trials), 97))
    assert (reasons[trials["val_loss"].notna()] == "").all()


def test_thinking_table_schema():
    with pytest.raises(SchemaError, match="forward_passes"):
        tidy_thinking(
            pd.DataFrame(
                {
                    "family": ["ebt"],
                    "mode": ["steps"],
                    "steps": [1],
                    "candidates": [1],
                    "val_loss": [1.0],
                    "val_perplexity": [2.7],
                }
            )
        )


def test_required_columns_are_the_agreed_schema():
    assert set(REQUIRED_COLUMNS) == {
        "trial_id",
        "name",
        "family",
        "axis",
        "status",
        "status_reason",
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
    }


def test_family_names_and_labels_are_the_model_registrys():
    """The report writes each family as model/family_ids.py labels it; an unknown family keeps its name."""
    assert {name: family_label(name) for name in FAMILY_IDS} == {n: f.label for n, f in FAMILY_IDS.items()}
    assert (family_label(EBT), family_label(TPP), family_label("gpt")) == ("EBT", "Transformer++", "gpt")
    assert {EBT, TPP} <= set(FAMILY_IDS)


@pytest.mark.parametrize(
    "tidy, raw, what",
    [
        (tidy_trials, make_trials(axes=("data",), n=2), "trials table"),
        (tidy_thinking, make_thinking(), "thinking table"),
    ],
)
def test_a_missing_column_error_names_the_table(tidy, raw: pd.DataFrame, what: str) -> None:
    """The report reads two tables; the error says which one lacks the column."""
    with pytest.raises(SchemaError, match=rf"^{what} is missing required column\(s\): val_loss$"):
        tidy(raw.drop(columns=["val_loss"]))


def test_a_boolean_column_is_not_read_as_numbers() -> None:
    """True/False where a count belongs is a mislabelled column, not 1 and 0."""
    raw = make_trials(axes=("data",), n=2)
    raw["seed"] = [True, False] * 2
    with pytest.raises(SchemaError, match=r"'seed'.*'True'"):
        tidy_trials(raw)


def test_training_cost_comes_from_the_executed_flops_and_every_worker() -> None:
    """train_flops: the executed count where one was recorded (> 0), else the 6ND convention, and says which;
    device_seconds: wall time x workers, one worker where the count is missing."""
    raw = make_trials(axes=("data",), n=2).iloc[[0, 0, 0]].reset_index(drop=True)
    raw["flops"] = 1e15
    raw["flops_executed"] = [3e15, 0.0, np.nan]
    raw["train_time_s"] = [10.0, 20.0, 30.0]
    raw["num_workers"] = [4, np.nan, 0]
    tidy = tidy_trials(raw)
    assert tidy["train_flops"].tolist() == [3e15, 1e15, 1e15]
    assert tidy["train_flops_source"].tolist() == ["executed", "study convention", "study convention"]
    assert tidy["device_seconds"].tolist() == [40.0, 20.0, 30.0]
    older = tidy_trials(make_trials(axes=("data",), n=2))  # a sweep from before cost was recorded
    assert (older["train_flops"] == older["flops"]).all() and older["device_seconds"].isna().all()
    assert (older["train_flops_source"] == "study convention").all()


def test_rows_that_enter_fits_keep_the_tables_columns_and_the_chosen_y() -> None:
    """split_trials judges the y it is given; the fit rows keep the table's columns and are renumbered."""
    tidy = tidy_trials(make_trials(axes=("data",), n=4))
    tidy.loc[1, "val_perplexity"] = np.nan
    for y, n_ok in (("val_loss", 8), ("val_perplexity", 7)):
        ok, excluded = split_trials(tidy, y)
        assert list(ok.columns) == list(tidy.columns) and ok.index.tolist() == list(range(n_ok))
        assert excluded["reason"].tolist() == ([] if y == "val_loss" else ["val_perplexity is missing"])


def test_thinking_split_and_source_are_normalised() -> None:
    """A blank split is the validation split (tables from before OOD evaluation); text is stripped."""
    raw = make_thinking().iloc[:3].assign(split=["", " OOD ", "Val"], source=[" stdlib ", "prose", ""])
    tidy = tidy_thinking(raw)
    assert tidy["split"].tolist() == ["val", "ood", "val"]
    assert tidy["source"].tolist() == ["stdlib", "prose", ""]


def test_a_thinking_table_from_before_ood_evaluation_is_all_validation_of_an_unnamed_source() -> None:
    """No split or source columns (tables logged before out-of-distribution evaluation): every row is the
    validation split, and its source is blank rather than a made-up name (the report then names none)."""
    raw = make_thinking().drop(columns=["split", "source"], errors="ignore")
    tidy = tidy_thinking(raw)
    assert set(tidy["split"]) == {"val"}
    assert set(tidy["source"]) == {""}
