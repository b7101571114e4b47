"""System-2 as the paper measures it (analysis/thinking.py): % perplexity reduction against forward passes,
validation vs out-of-distribution text, on synthetic thinking tables with known gains."""

from __future__ import annotations

import json

import pytest

from analysis.data import tidy_thinking
from analysis.options import AnalysisOptions
from analysis.report import write_report
from analysis.thinking import system2
from tests.analysis.synthetic_scaling import make_split_thinking, make_thinking, make_trials


def _analyse(gains: dict[str, float], noise: float = 0.05, seed: int = 0):
    return system2(tidy_thinking(make_split_thinking(gains, noise=noise, seed=seed)), bootstrap=500, seed=1)


def test_reductions_are_the_known_gains_and_transformer_pp_is_flat_at_zero() -> None:
    s2 = _analyse({"val": 0.05, "ood": 0.20})
    ebt = s2.curves[(s2.curves["family"] == "ebt") & (s2.curves["mode"] == "steps")]
    for split, gain in (("val", 0.05), ("ood", 0.20)):
        rows = ebt[ebt["split"] == split].sort_values("forward_passes")
        assert rows["reduction"].tolist() == pytest.approx([gain * (k - 1) / 5 for k in range(1, 7)])
        assert rows["reduction_lo"].iloc[-1] < rows["reduction"].iloc[-1] < rows["reduction_hi"].iloc[-1]
        assert rows["reduction_lo"].iloc[0] == rows["reduction_hi"].iloc[0] == 0  # the reference itself
    tpp = s2.curves[s2.curves["family"] == "transformer_pp"]
    assert len(tpp) > 0 and (tpp["reduction"] == 0).all() and (tpp["reduction_hi"] == 0).all()
    verify = s2.shifts["verify"]
    assert verify.forward_passes == 8  # 2 steps x 4 candidates, the largest common budget
    assert verify.val.value == pytest.approx(0.05) and verify.ood.value == pytest.approx(0.20)


def test_a_gain_that_grows_out_of_distribution_is_reported_so() -> None:
    s2 = _analyse({"val": 0.05, "ood": 0.20})
    shift = s2.shifts["steps"]
    assert shift.forward_passes == 6
    assert shift.difference.value == pytest.approx(0.15)
    assert shift.difference.lo > 0 and shift.grows is True
    assert "Thinking longer to 6 forward passes" in s2.verdict
    assert "the gain grows out of distribution by +15.0 points" in s2.verdict


def test_a_gain_that_shrinks_out_of_distribution_is_reported_so() -> None:
    s2 = _analyse({"val": 0.20, "ood": 0.05})
    assert s2.shifts["steps"].grows is False and s2.shifts["steps"].difference.hi < 0
    assert "the gain shrinks out of distribution" in s2.verdict


def test_equal_gains_with_noisy_windows_are_not_called_a_difference() -> None:
    s2 = _analyse({"val": 0.10, "ood": 0.10}, noise=0.3)
    shift = s2.shifts["steps"]
    assert shift.difference.value == pytest.approx(0.0, abs=1e-12)
    assert shift.difference.lo < 0 < shift.difference.hi and shift.grows is None
    assert "no significant difference out of distribution" in s2.verdict
    quiet = _analyse({"val": 0.10, "ood": 0.10}, noise=0.01).shifts["steps"].difference
    assert quiet.hi - quiet.lo < (shift.difference.hi - shift.difference.lo) / 5  # noisier windows: wider


def test_a_table_from_before_ood_evaluation_still_reports_without_a_shift() -> None:
    s2 = system2(tidy_thinking(make_thinking()), bootstrap=100)
    assert set(s2.curves["split"]) == {"val"} and not s2.shifts
    ebt = s2.curves[s2.curves["family"] == "ebt"]
    assert ebt["reduction_lo"].isna().all()  # no per-window losses: no interval
    assert "no out-of-distribution comparison" in s2.verdict


def test_report_and_summary_carry_the_system2_ood_line(tmp_path) -> None:
    trials = make_trials(axes=("data",), n=5, noise=0.01)
    thinking = make_split_thinking({"val": 0.05, "ood": 0.20})
    paths = write_report(trials, tmp_path, {}, thinking, AnalysisOptions(bootstrap=200, seed=0))
    summary = json.loads(paths["summary"].read_text())
    s2 = summary["system2"]
    assert s2["sources"] == {"ood": "prose", "val": "stdlib"}
    assert s2["ood_vs_val"]["steps"]["grows"] is True
    assert s2["ood_vs_val"]["steps"]["difference"]["value"] == pytest.approx(0.15)
    curve = [c for c in s2["curves"] if c["split"] == "ood" and c["family"] == "ebt" and c["mode"] == "steps"]
    assert [c["forward_passes"] for c in curve] == [1, 2, 3, 4, 5, 6]
    assert curve[-1]["reduction"]["value"] == pytest.approx(0.20)
    md = paths["markdown"].read_text()
    headline = md.split("## Every verdict\n\n")[1].split("\n\n")[0]  # after the first screen and claims
    assert "System-2 (EBT" in headline and "grows out of distribution" in headline
    assert s2["verdict"] in md and "out of distribution (prose)" in md
    assert (paths["plots_dir"] / "thinking.png").is_file()
