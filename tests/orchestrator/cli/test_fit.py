"""`ebtscale fit` via typer's CliRunner: JSON and table output, one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.analysis.synthetic_scaling import CHINCHILLA, SHARED, chinchilla_loss, four_sizes

runner = CliRunner()


@pytest.fixture
def power_csv(tmp_path):
    rng = np.random.default_rng(0)
    x = np.geomspace(1e6, 1e9, 12)
    df = pd.DataFrame({"tokens": x, "val_loss": 20 * x**-0.15 * np.exp(0.01 * rng.standard_normal(12))})
    df["family"] = ["ebt", "transformer_pp"] * 6
    path = tmp_path / "points.csv"
    df.to_csv(path, index=False)
    return path


def run(*args: str):
    return runner.invoke(app, list(args))


def test_json_output_parses_and_has_the_keys(power_csv):
    res = run(
        "fit",
        str(power_csv),
        "--y",
        "val_loss",
        "--x",
        "D=tokens",
        "--form",
        "power",
        "--bootstrap",
        "100",
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"A", "alpha", "r2_log", "n_points"} <= out.keys() and "E" not in out
    assert set(out["alpha"]) == {"value", "lo", "hi"}
    assert out["alpha"]["value"] == pytest.approx(0.15, abs=0.01)
    assert out["n_points"] == 12


def test_where_filters_rows(power_csv):
    res = run("fit", str(power_csv), "--x", "tokens", "--where", "family=ebt", "--bootstrap", "0", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_points"] == 6


def test_chinchilla_from_parquet(tmp_path):
    truth, loss = CHINCHILLA, chinchilla_loss
    rng = np.random.default_rng(1)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 60))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 60))
    path = tmp_path / "grid.parquet"
    pd.DataFrame({"n": N.astype(str), "d": D, "loss": loss(N, D)}).to_parquet(path)  # numbers as strings too
    res = run(
        "fit",
        str(path),
        "--y",
        "loss",
        "--x",
        "D=d",
        "--x",
        "N=n",
        "--form",
        "chinchilla",
        "--bootstrap",
        "20",
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"E", "A", "B", "alpha", "beta"} <= out.keys()
    assert out["alpha"]["value"] == pytest.approx(truth["alpha"], abs=0.01)  # N=n went to N despite the order


def test_table_output(power_csv):
    res = run("fit", str(power_csv), "--x", "D=tokens", "--form", "saturating", "--bootstrap", "50")
    assert res.exit_code == 0, res.output
    for word in ("saturating", "alpha", "E", "R² (log)"):
        assert word in res.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing.csv", "--x", "tokens"], "missing.csv: no such file"),
        (["{csv}", "--x", "D=flops"], "column 'flops' not in points.csv"),
        (["{csv}", "--x", "tokens", "--y", "val_ppl"], "column 'val_ppl' not in points.csv"),
        (["{csv}", "--x", "tokens", "--form", "cubic"], "unknown --form 'cubic'"),
        (["{csv}", "--x", "N=tokens", "--form", "chinchilla"], "needs exactly --x N=COLUMN and --x D=COLUMN"),
        (["{csv}", "--x", "tokens", "--x", "val_loss"], "needs exactly one --x"),
        (["{csv}", "--x", "family"], "column 'family' has non-numeric value(s)"),
        (["{csv}", "--x", "tokens", "--where", "family=gpt"], "no rows of points.csv match family=gpt"),
        (["{txt}", "--x", "tokens"], "unsupported extension '.txt'"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_message(args, needle, power_csv):
    txt = power_csv.with_suffix(".txt")
    txt.write_text("x")
    args = [a.format(csv=power_csv, txt=txt) for a in args]
    res = run("fit", *args, "--bootstrap", "0")
    assert res.exit_code == 2
    assert needle in res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_degenerate_data_is_a_fit_error_exit_2(tmp_path):
    path = tmp_path / "flat.csv"
    pd.DataFrame({"tokens": [1e6] * 4, "val_loss": [2.0, 2.1, 2.0, 1.9]}).to_csv(path, index=False)
    res = run("fit", str(path), "--x", "tokens", "--bootstrap", "0")
    assert res.exit_code == 2
    assert "single tokens value" in res.output


# ------------------------------------------------------------------------------ laws, backtests, flags (#27)


@pytest.fixture
def grid_csv(tmp_path):
    N, D, y = four_sizes(0.005, np.random.default_rng(0))
    path = tmp_path / "grid.csv"
    pd.DataFrame({"n_params": N, "tokens": D, "val_loss": y}).to_csv(path, index=False)
    return path


def test_a_shared_exponent_law_from_an_expression(grid_csv):
    res = run(
        "fit", str(grid_csv), "--x", "N=n_params", "--x", "D=tokens", "--law", "E + A*N^-a + B*D^-a",
        "--bootstrap", "100", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"E", "A", "B", "a"} <= out.keys() and "alpha" not in out
    assert out["a"]["value"] == pytest.approx(SHARED["alpha"], abs=0.03)
    assert out["law"] == "E + A*N^-a + B*D^-a" and out["identified"] is True


def test_the_over_training_law_reads_c_and_m_as_products_of_columns(grid_csv):
    res = run(
        "fit", str(grid_csv), "--x", "C=6*n_params*tokens", "--x", "M=tokens/n_params", "--form", "overtrain",
        "--bootstrap", "0", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["eta"]["value"] == pytest.approx(SHARED["alpha"] / 2, abs=0.015)


def test_fixed_and_bounded_parameters_and_the_flag_of_a_binding_bound(grid_csv):
    res = run(
        "fit", str(grid_csv), "--x", "N=n_params", "--x", "D=tokens", "--form", "shared", "--fix", "E=1.8",
        "--bound", "alpha=0:0.25", "--bootstrap", "50",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "fixed" in res.stdout and "sits at its upper bound 0.25" in res.stdout
    assert "NOT IDENTIFIED" in res.stdout and "widen or drop the bound on alpha" in res.stdout


def test_backtest_of_an_n_d_law_on_the_largest_model_and_on_a_row_filter(grid_csv):
    base = ["fit", str(grid_csv), "--x", "N=n_params", "--x", "D=tokens", "--form", "shared", "--backtest"]
    res = run(*base, "--holdout", "N", "--bootstrap", "100", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_holdout"] == 6 and out["n_train"] == 18 and len(out["points"]) == 6
    assert all(p["x"]["n_params"] == pytest.approx(2e8) for p in out["points"])
    assert all(abs(p["error"]["value"]) < 0.03 and isinstance(p["inside"], bool) for p in out["points"])
    res = run(*base, "--holdout-where", "tokens>=5e10", "--bootstrap", "50")
    assert res.exit_code == 0, res.output
    assert "held out the rows where tokens>=5e10: 4 row(s)" in res.stdout and "inside" in res.stdout
    res = run(*base, "--holdout", "6*n_params*tokens", "--bootstrap", "0", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["holdout"].startswith("the largest 6*n_params*tokens")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--law", "E - A*N^-a"], "subtracted term"),
        (["--law", "E + A*N^-a + B*D^-a", "--fix", "A=3"], "cannot be fixed"),
        (["--form", "shared", "--bound", "alpha=0"], "--bound expects NAME=VALUE (LO:HI)"),
        (["--form", "shared", "--fix", "E=lots"], "is not a number"),
        (["--form", "shared", "--holdout", "N"], "add --backtest"),
        (["--form", "shared", "--backtest", "--holdout", "Q"], "column 'Q' not in the table"),
        (["--form", "shared", "--backtest", "--holdout-where", "tokens~1"], "--holdout-where expects"),
        (["--form", "overtrain"], "needs exactly --x C=COLUMN and --x M=COLUMN"),
    ],
)
def test_bad_law_options_exit_2_with_one_line(args, needle, grid_csv):
    res = run("fit", str(grid_csv), "--x", "N=n_params", "--x", "D=tokens", "--bootstrap", "0", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
