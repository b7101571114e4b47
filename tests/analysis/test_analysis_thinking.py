"""System-2 as the paper measures it (analysis/thinking.py): % perplexity reduction against forward passes,
validation vs out-of-distribution text, on synthetic thinking tables with known gains."""

from __future__ import annotations

import json
import math

import pandas as pd
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


def _small(gains: dict[str, float], **kw) -> pd.DataFrame:
    """A quick thinking table: 16 windows per row, little noise."""
    return tidy_thinking(make_split_thinking(gains, windows=16, noise=0.01, **kw))


def test_the_result_does_not_depend_on_the_tables_row_order() -> None:
    """Same measurements, same seed: the same curves, intervals and verdict however the rows were written."""
    table = _small({"val": 0.05, "ood": 0.20})
    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a, b = (system2(t, bootstrap=30, seed=1) for t in (table, shuffled))
    pd.testing.assert_frame_equal(a.curves, b.curves)
    assert a.to_dict() == b.to_dict()
    assert a.curves["split"].drop_duplicates().tolist() == ["val", "ood"]  # validation first


def test_summary_carries_every_curve_with_its_interval_the_level_and_the_notes() -> None:
    """summary.json's system2: each curve's reduction with its interval as in the table, the level and
    bootstrap it was computed at, and a note for a family with no 1-forward-pass row to measure from."""
    table = _small({"val": 0.05})
    table = table[~((table["family"] == "transformer_pp") & (table["forward_passes"] == 1))]
    s2 = system2(table, bootstrap=30, level=0.8, seed=1)
    out = json.loads(json.dumps(s2.to_dict()))
    assert (out["level"], out["bootstrap"]) == (0.8, 30)
    assert out["notes"] == ["Transformer++ on val: no 1-forward-pass row to measure reductions from"]
    assert {c["family"] for c in out["curves"]} == {"ebt"}
    assert [c["forward_passes"] for c in out["curves"]] == s2.curves["forward_passes"].tolist()
    assert [[c["reduction"][k] for k in ("value", "lo", "hi")] for c in out["curves"]] == (
        s2.curves[["reduction", "reduction_lo", "reduction_hi"]].to_numpy().tolist()
    )


def test_a_gain_negative_on_both_splits_says_thinking_hurts() -> None:
    s2 = system2(_small({"val": -0.05, "ood": -0.10}), bootstrap=30, seed=1)
    verdict = s2.shifts["steps"].verdict
    assert verdict.startswith("thinking longer to 6 forward passes: perplexity reduction -5.0% (95% CI")
    assert "(negative on both: thinking makes this model's perplexity worse)" in verdict
    assert "the gain shrinks out of distribution" in verdict


def test_a_split_without_window_losses_has_no_interval_and_neither_has_the_difference() -> None:
    """Validation measured before per-window losses were recorded, OOD after: the OOD reduction keeps its
    interval, the validation one and the difference have none, and the verdict says so."""
    table = _small({"val": 0.05, "ood": 0.20})
    val = table["split"] == "val"
    table["window_nll"] = table["window_nll"].where(~val, None)
    shift = system2(table, bootstrap=30, seed=1).shifts["steps"]
    assert shift.ood.lo < shift.ood.value < shift.ood.hi
    assert all(math.isnan(v) for v in (shift.val.lo, shift.val.hi, shift.difference.lo, shift.difference.hi))
    assert shift.difference.value == pytest.approx(0.15) and shift.grows is None
    assert shift.verdict.endswith("difference +15.0 points (no interval: no per-window losses).")


@pytest.mark.filterwarnings("error")
def test_windows_without_tokens_give_no_interval_quietly() -> None:
    """Per-window losses whose token counts are all zero cannot be resampled: no interval, no NaN warnings."""
    table = _small({"val": 0.05, "ood": 0.20})
    table["window_tokens"] = table["window_tokens"].map(lambda t: [0] * len(t) if isinstance(t, list) else t)
    s2 = system2(table, bootstrap=30, seed=1)
    ebt = s2.curves[s2.curves["family"] == "ebt"]
    assert ebt["reduction_lo"].isna().all() and s2.shifts["steps"].grows is None


def test_the_verdict_names_the_text_of_each_split() -> None:
    s2 = system2(_small({"val": 0.05, "ood": 0.20}), bootstrap=30, seed=1)
    assert "validation: stdlib, out of distribution: prose;" in s2.verdict
    other = system2(_small({"test": 0.05}), bootstrap=0)  # a split the report has no label for
    assert other.verdict == "System-2: EBT curves on test text only; no out-of-distribution comparison."
    tpp_only = system2(_small({"val": 0.05}).query("family == 'transformer_pp'"), bootstrap=0)
    assert tpp_only.verdict == "System-2: no EBT curves to compare."  # not "EBT curves on validation text"
    empty = system2(_small({"val": 0.05}).iloc[:0], bootstrap=0)
    assert empty.verdict == "System-2: no EBT curves to compare."


def test_negative_on_one_split_only_is_not_called_harmful() -> None:
    for gains in ({"val": 0.05, "ood": -0.10}, {"val": -0.05, "ood": 0.10}):
        verdict = system2(_small(gains), bootstrap=30, seed=1).shifts["steps"].verdict
        assert "negative on both" not in verdict


def test_each_ood_sentence_states_its_difference_in_points_with_its_interval() -> None:
    shrinks = _analyse({"val": 0.20, "ood": 0.05}).shifts["steps"]
    d = shrinks.difference
    assert shrinks.verdict.endswith(
        f"the gain shrinks out of distribution, by {100 * d.value:+.1f} points "
        f"(95% CI {100 * d.lo:+.1f} to {100 * d.hi:+.1f})."
    )
    same = _analyse({"val": 0.10, "ood": 0.10}, noise=0.3).shifts["steps"]
    d = same.difference
    assert same.verdict.endswith(
        f"no significant difference out of distribution: {100 * d.value:+.1f} points "
        f"(95% CI {100 * d.lo:+.1f} to {100 * d.hi:+.1f}) includes zero."
    )


def test_the_ood_record_has_the_documented_keys() -> None:
    s2 = _analyse({"val": 0.05, "ood": 0.20})
    record = json.loads(json.dumps(s2.to_dict()))
    shift = record["ood_vs_val"]["steps"]
    assert set(shift) == {"forward_passes", "val", "ood", "difference", "grows", "verdict"}
    assert shift["forward_passes"] == 6 and shift["grows"] is True
    assert shift["verdict"] == s2.shifts["steps"].verdict
    assert shift["difference"]["value"] == pytest.approx(0.15)
    curve = record["curves"][0]
    assert set(curve) == {
        "split",
        "source",
        "family",
        "mode",
        "steps",
        "candidates",
        "forward_passes",
        "perplexity",
        "reduction",
    }
    assert [c["steps"] for c in record["curves"]] == s2.curves["steps"].tolist()
    assert [c["candidates"] for c in record["curves"]] == s2.curves["candidates"].tolist()
