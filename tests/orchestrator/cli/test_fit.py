"""`ebtscale fit` via typer's CliRunner: JSON and table output, one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.analysis.synthetic_scaling import CHINCHILLA, chinchilla_loss

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
