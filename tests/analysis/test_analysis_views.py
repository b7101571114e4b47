"""Equal compute and equal time: a family ahead per token can be behind per FLOP and per second, and the
report says so in all three views."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.compare import compare_axis
from analysis.data import tidy_trials
from analysis.options import AnalysisOptions
from analysis.report import write_report
from tests.analysis.synthetic_scaling import make_trials, with_costs

ALPHA = 0.2
EBT_FPT, TPP_FPT = 3 * 6 * 2e6, 6 * 2e6  # an EBT token executes three times the FLOPs
EBT_RATE, TPP_RATE = 0.5e12, 1e12  # and runs at half the throughput


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    """Both families on one token grid with one slope; EBT's loss is 10% lower at every token count."""
    base = make_trials(axes=("data",), n=8, noise=0.005, seed=1)
    tpp = base["family"] == "transformer_pp"
    ebt_rows = base[tpp].assign(family="ebt", name=base.loc[tpp, "name"].str.replace("transformer_pp", "ebt"))
    ebt_rows["val_loss"] = (
        0.9 * ebt_rows["val_loss"] * np.exp(0.005 * np.random.default_rng(2).standard_normal(8))
    )
    table = pd.concat([ebt_rows, base[tpp]], ignore_index=True)
    return with_costs(table, {"ebt": 3, "transformer_pp": 1}, {"ebt": EBT_RATE, "transformer_pp": TPP_RATE})


def truth_at_equal_cost(cost_ratio: float) -> float:
    """EBT / Transformer++ loss - 1 at equal cost: EBT reaches 1/ratio the tokens, L ~ 0.9 D^-alpha."""
    return 0.9 * cost_ratio**ALPHA - 1


def test_ahead_per_token_behind_per_flop_and_per_second(trials):
    tidy = tidy_trials(trials)
    per_token = compare_axis(tidy, "data", AnalysisOptions(bootstrap=300, seed=0))
    per_flop = compare_axis(tidy, "data", AnalysisOptions(bootstrap=300, seed=1), view="flops")
    per_second = compare_axis(tidy, "data", AnalysisOptions(bootstrap=300, seed=2), view="time")

    assert per_token.gap_verdict.startswith("EBT is ahead")
    assert per_token.gap.relative.lo < -0.1 < per_token.gap.relative.hi

    assert per_flop.x_col == "train_flops"
    assert per_flop.gap.x == pytest.approx(TPP_FPT * 1e9)  # the largest FLOPs both reached: T++'s
    want = truth_at_equal_cost(EBT_FPT / TPP_FPT)  # +12%
    assert per_flop.gap_verdict.startswith("Transformer++ is ahead")
    assert per_flop.gap.relative.lo < want < per_flop.gap.relative.hi
    assert not per_flop.rate.significant  # one slope: the views shift the curve, not its exponent
    assert "per training FLOP" in per_flop.rate.verdict

    want = truth_at_equal_cost(EBT_FPT / TPP_FPT * TPP_RATE / EBT_RATE)  # +26%
    assert per_second.x_col == "device_seconds"
    assert per_second.gap_verdict.startswith("Transformer++ is ahead")
    assert per_second.gap.relative.lo < want < per_second.gap.relative.hi


def test_the_executed_count_wins_over_the_study_convention(trials):
    tidy = tidy_trials(trials)
    assert (tidy["train_flops"] == tidy["flops_executed"]).all()
    assert set(tidy["train_flops_source"]) == {"executed"}
    older = tidy_trials(trials.drop(columns=["flops_executed", "train_time_s", "num_workers"]))
    assert (older["train_flops"] == older["flops"]).all()
    assert set(older["train_flops_source"]) == {"study convention"}
    cmp = compare_axis(older, "data", AnalysisOptions(bootstrap=0), view="time")
    assert not cmp.fits and "no positive device_seconds" in cmp.notes["ebt"]


def test_device_seconds_count_every_worker(trials):
    two = tidy_trials(trials.assign(num_workers=2))
    assert np.allclose(two["device_seconds"], 2 * two["train_time_s"])


def test_report_headline_and_summary_carry_the_three_views(trials, tmp_path):
    paths = write_report(trials, tmp_path, {}, options=AnalysisOptions(bootstrap=200, seed=0))
    md = paths["markdown"].read_text()
    headline = md.split("## Every verdict\n\n")[1].split("\n\n")[0]  # after the first screen and claims
    for words in ("Per tokens: EBT is ahead", "Per training FLOP: Transformer++ is ahead",
                  "Per device-second: Transformer++ is ahead"):  # fmt: skip
        assert words in headline
    assert "## Equal compute and equal time" in md
    assert (paths["plots_dir"] / "data_flops_fit.png").is_file()
    summary = json.loads(paths["summary"].read_text())
    assert summary["headline"] == headline
    views = summary["axes"]["data"]["views"]
    assert set(views) == {"flops", "time"}
    assert views["flops"]["x"] == "train_flops"
    assert views["flops"]["gap"]["ahead"] == "Transformer++"
    assert summary["axes"]["data"]["gap"]["ahead"] == "EBT"
    assert views["time"]["gap"]["relative"]["lo"] > 0
    rows = md.split("## Equal compute and equal time")[1].split("\n## ")[0]
    for view in ("per axis x", "per training FLOP", "per device-second"):  # a row per view, named
        assert f"| data | {view} |" in rows
