"""Guarantee: whatever data reaches the analysis (NaN, inf, negative, zero, too few points, constant
columns, missing columns, wrong dtypes, wrong shapes), it is either fitted, with finite results, or rejected
with the project's error type (AnalysisError) whose message names the offending column; never another
exception. The command line turns a rejection into one line on stderr, exit code 2, no traceback.

Property tests (hypothesis) over the real entry points: `fit_law` and its wrappers, `tidy_trials` +
`compare_axis` (what the report runs per axis), `isoflop_allocation`, and `ebtscale fit` on CSV files."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from analysis.compare import compare_axis
from analysis.data import NUMERIC_COLUMNS, REQUIRED_COLUMNS, tidy_trials
from analysis.errors import AnalysisError
from analysis.fit import fit_law
from analysis.isoflop import isoflop_allocation
from analysis.laws import FORMS
from analysis.options import AnalysisOptions
from tests.helpers import cli

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values that break fits: NaN, infinities, zero, negatives, extremes; plus plain positive data.
NASTY = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, -1e-300, 1e-300, 1e308, 5e-324])
POSITIVE = st.floats(min_value=1e-3, max_value=1e12, allow_nan=False, allow_infinity=False)
VALUE = st.one_of(POSITIVE, POSITIVE, POSITIVE, NASTY)
# What a CSV or an MLflow param can hold instead of a number.
JUNK = st.sampled_from(["abc", "", "nan", "None", "1e5", " 7 ", "inf", "-3", True, None, "1,5", b"x", [1]])


def single_line(err: BaseException) -> str:
    message = str(err)
    assert message and "\n" not in message.strip(), f"not one line: {message!r}"
    return message


def check_fit(result: Any) -> None:
    """A fit that is returned has finite point estimates and a finite objective."""
    values = {k: v.value for k, v in {**result.params, **result.derived}.items()}
    assert all(math.isfinite(v) for v in values.values()), values
    assert math.isfinite(result.objective)


def first_bad_column(columns: dict[str, np.ndarray]) -> str | None:
    """The column a per-value rejection must name: the first (x columns, then y) with a NaN/inf or a value
    <= 0 (what no log-space fit can take)."""
    for name, values in columns.items():
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            return name
    return None


@st.composite
def fit_inputs(draw: st.DrawFn) -> tuple[str, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Positive data of 0-12 points (often enough to fit), then maybe a constant column and a few nasty
    values injected at random cells."""
    form = draw(st.sampled_from(sorted(FORMS)))
    k = FORMS[form].n_terms
    n = draw(st.integers(0, 12))
    columns = [draw(st.lists(POSITIVE, min_size=n, max_size=n)) for _ in range(k + 1)]
    table = np.array(columns, dtype=float).reshape(k + 1, n)
    if n and draw(st.sampled_from([False, False, False, True])):
        table[draw(st.integers(0, k))] = table[0, 0]  # a constant column
    for _ in range(draw(st.sampled_from([0, 0, 1, 2])) if n else 0):
        table[draw(st.integers(0, k)), draw(st.integers(0, n - 1))] = draw(NASTY)
    names = tuple(f"x{i}_col" for i in range(k))
    return form, table[:k].T, table[k], names


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fit_inputs())
def test_fit_law_fits_or_names_the_column(case: tuple[str, np.ndarray, np.ndarray, tuple[str, ...]]) -> None:
    form, X, y, names = case
    bad = first_bad_column({**{n: X[:, i] for i, n in enumerate(names)}, "loss_col": y})
    try:
        result = fit_law(X, y, form, x_names=names, y_name="loss_col", bootstrap=8)
    except AnalysisError as err:
        event(f"rejected: {'bad value' if bad else 'unidentifiable'}")
        message = single_line(err)
        if bad is not None:
            assert bad in message, (bad, message)
        return
    event("fitted")
    assert bad is None
    check_fit(result)


@SETTINGS
@given(
    st.sampled_from(sorted(FORMS)),
    st.one_of(
        st.lists(JUNK, max_size=5).map(lambda xs: [*xs, "abc"]),  # at least one non-number among junk
        st.just([[1.0, 2.0], [3.0]]),  # ragged
        st.just(np.ones((3, 2, 2))),  # too many dimensions
        st.just(np.float64(3.0)),  # a scalar
        st.just(np.array([], dtype=float)),  # empty
    ),
)
def test_fit_law_rejects_what_is_not_a_numeric_array(form: str, x: Any) -> None:
    y = np.linspace(1.0, 2.0, 6)
    with pytest.raises(AnalysisError) as err:
        fit_law(x, y, form, x_names=("N_col", "D_col")[: FORMS[form].n_terms], y_name="loss_col", bootstrap=0)
    single_line(err.value)


@SETTINGS
@given(st.sampled_from(sorted(FORMS)), st.integers(1, 3), st.integers(1, 4))
def test_fit_law_rejects_mismatched_names_and_shapes(form: str, n_names: int, extra: int) -> None:
    law = FORMS[form]
    X = np.geomspace(1.0, 100.0, 8 * law.n_terms).reshape(8, law.n_terms)
    y = np.geomspace(3.0, 2.0, 8 + extra)  # one length too many
    with pytest.raises(AnalysisError) as err:
        fit_law(X, y, form, bootstrap=0)
    single_line(err.value)
    if n_names != law.n_terms:  # names that do not match the columns: rejected too
        with pytest.raises(AnalysisError):
            fit_law(X, y[:8], form, x_names=tuple(f"c{i}" for i in range(n_names)), bootstrap=0)


# ------------------------------------------------------------------------------ tables (report path)


def good_trials(n: int = 8) -> dict[str, list[Any]]:
    tokens = np.geomspace(1e5, 1e7, n // 2)
    rows: dict[str, list[Any]] = {c: [] for c in REQUIRED_COLUMNS}
    for fam in ("ebt", "transformer_pp"):
        for i, d in enumerate(tokens):
            values = {
                "trial_id": f"{fam}{i}",
                "name": f"{fam}-{i}",
                "family": fam,
                "axis": "data",
                "status": "finished",
                "status_reason": "",
                "n_params": 1e6,
                "n_params_non_embedding": 5e5,
                "tokens": d,
                "batch_size": 16,
                "n_layers": 2,
                "d_model": 64,
                "flops": 6e6 * d,
                "flops_budget": "",
                "val_loss": 2 + 30 * d**-0.3,
                "val_perplexity": math.exp(2 + 30 * d**-0.3),
                "seed": 0,
            }
            for c in REQUIRED_COLUMNS:
                rows[c].append(values[c])
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_trials_table_is_analysed_or_rejected_naming_the_column(data: st.DataObject) -> None:
    rows = good_trials()
    dropped = data.draw(st.lists(st.sampled_from(REQUIRED_COLUMNS), max_size=2, unique=True))
    for c in dropped:
        del rows[c]
    for _ in range(data.draw(st.integers(0, 4))):  # corrupt some cells
        col = data.draw(st.sampled_from(sorted(rows)))
        i = data.draw(st.integers(0, len(rows[col]) - 1))
        rows[col][i] = data.draw(st.one_of(JUNK, NASTY))
    if data.draw(st.booleans()) and "tokens" in rows:  # a constant x column
        rows["tokens"] = [1e6] * len(rows["tokens"])
    frame = pd.DataFrame(rows)
    try:
        tidy = tidy_trials(frame)
    except AnalysisError as err:
        message = single_line(err)
        assert any(c in message for c in REQUIRED_COLUMNS), message
        if dropped:
            assert "missing required column" in message and all(c in message for c in dropped)
        return
    assert not dropped
    for form in ("power", "saturating"):
        result = compare_axis(tidy, "data", AnalysisOptions(form=form, bootstrap=8))
        for fit in result.fits.values():
            check_fit(fit)
        for note in result.notes.values():
            assert note and "\n" not in note


@st.composite
def isoflop_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """isoFLOP profiles (budgets x model sizes, loss convex in log N or not), then maybe nasty cells."""
    rows = []
    for c in draw(st.lists(st.sampled_from([1e15, 1e16, 1e17, 1e18]), max_size=4, unique=True)):
        sizes = draw(
            st.lists(st.sampled_from([1e5, 3e5, 1e6, 3e6, 1e7, 3e7]), min_size=2, max_size=6, unique=True)
        )
        curvature = draw(st.sampled_from([0.05, 0.05, 0.05, 0.0, -0.05]))
        for n in sizes:
            loss = 2.0 + curvature * (math.log(n) - math.log(c) / 3) ** 2 + draw(POSITIVE) * 1e-6
            rows.append([n, c, loss])
    table = np.array(rows, dtype=float).reshape(-1, 3)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2])) if rows else 0):
        table[draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 2))] = draw(NASTY)
    return table[:, 0], table[:, 1], table[:, 2]


@SETTINGS
@given(isoflop_inputs())
def test_isoflop_allocation_fits_or_rejects(case: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    N, C, y = case
    try:
        result = isoflop_allocation(N, C, y, bootstrap=8)
    except AnalysisError as err:
        event("rejected")
        single_line(err)
        return
    event("fitted")
    assert all(math.isfinite(e.value) for e in result.exponents.values()), result.exponents


# ------------------------------------------------------------------------------ the command line


runner = CliRunner()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fit_command_answers_in_one_line_or_fits(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    from orchestrator.cli import app

    n = data.draw(st.integers(0, 8))
    columns_data: dict[str, list[Any]] = {
        "tokens": data.draw(st.lists(POSITIVE, min_size=n, max_size=n, unique=True)),
        "val_loss": data.draw(st.lists(POSITIVE, min_size=n, max_size=n)),
    }
    for _ in range(data.draw(st.sampled_from([0, 0, 1, 2])) if n else 0):
        column = columns_data[data.draw(st.sampled_from(sorted(columns_data)))]
        column[data.draw(st.integers(0, n - 1))] = data.draw(st.one_of(NASTY, JUNK))
    frame = pd.DataFrame(columns_data)
    columns = data.draw(st.sampled_from([["tokens", "val_loss"]] * 3 + [["tokens"], ["val_loss"], []]))
    path = tmp_path_factory.getbasetemp() / "fit-command-points.csv"  # rewritten by every example
    frame[columns].to_csv(path, index=False)
    x_col = data.draw(st.sampled_from(["tokens", "missing_col"]))
    res = runner.invoke(
        app, ["fit", str(path), "--x", f"D={x_col}", "--y", "val_loss", "--bootstrap", "8", "--json"]
    )
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 0:
        event("fitted")
        out = json.loads(res.stdout)
        assert math.isfinite(out["alpha"]["value"]) and math.isfinite(out["A"]["value"])
        return
    event("rejected")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output


def fit_cli(path: Path) -> subprocess.CompletedProcess:
    """`ebtscale fit` of a tokens -> val_loss table, as a user runs it."""
    return cli("fit", str(path), "--x", "D=tokens", "--y", "val_loss", timeout=300)


def test_cli_fit_error_is_one_line_naming_the_column(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    pd.DataFrame({"tokens": [1e6, 1e7, 1e8, 1e9], "val_loss": [3.0, "oops", 2.5, 2.4]}).to_csv(
        path, index=False
    )
    done = fit_cli(path)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: column 'val_loss' has non-numeric value(s): 'oops'"

    pd.DataFrame({"tokens": [1e6, 1e7, 1e8, -1e9], "val_loss": [3.0, 2.7, 2.5, 2.4]}).to_csv(
        path, index=False
    )
    done = fit_cli(path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: tokens has non-positive value(s) (-1e+09)")


def test_numeric_columns_named_in_errors() -> None:
    """tidy_trials names the first non-numeric column (not just 'a column')."""
    rows = good_trials()
    rows["val_loss"][3] = "twelve"
    with pytest.raises(AnalysisError, match="column 'val_loss' has non-numeric value"):
        tidy_trials(pd.DataFrame(rows))
    assert "val_loss" in NUMERIC_COLUMNS


def test_reading_commands_create_nothing_and_a_missing_input_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In an empty folder: `report` and `export` of a sweep that never ran, and `demo --spec` of a missing
    file, fail in one line (exit 2) instead of creating an empty MLflow store or running the default demo;
    `sweep plan` and `sweep status` of a spec that never ran answer and leave the folder as it was."""
    from orchestrator.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = tmp_path / "never.yaml"
    spec.write_text(
        "name: never\nfamilies: [transformer_pp]\n"
        "base: {model: {d_model: 32, n_layers: 1, n_heads: 2, vocab_size: 320, context_length: 32},\n"
        "  data: {source: stdlib, vocab_size: 320}, train: {tokens: 2048, global_batch_size: 8}}\n"
        "axes: {data: {tokens: [2048]}}\n"
    )
    runner = CliRunner()
    refused = {
        "report nosuch": (["report", "nosuch"], "no sweep named 'nosuch': no MLflow store"),
        "export nosuch": (["sweep", "export", "nosuch", "--out", "x.csv"], "no MLflow store"),
        "report of a spec": (["report", str(spec)], "no sweep named 'never': no MLflow store"),
        "demo --spec": (["demo", "--spec", "missing.yaml"], "missing.yaml"),
    }
    for what, (args, says) in refused.items():
        done = runner.invoke(app, args)
        assert done.exit_code == 2, (what, done.output)
        assert says in done.output and "Traceback" not in done.output, (what, done.output)
    for args in (["sweep", "plan", str(spec)], ["sweep", "status", str(spec)]):
        done = runner.invoke(app, args)
        assert done.exit_code == 0, (args, done.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never.yaml"]  # no store, no outputs/ folder
