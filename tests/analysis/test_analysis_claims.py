"""The claims table (analysis/claims.py), the first screen and the learning check (analysis/learning.py), on
synthetic tables whose true scaling rates are known: each word is reached where the truth says it must be."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.claims import (
    AGREES,
    CONTRADICTS,
    INCONCLUSIVE,
    PAPER,
    PAPER_RATES,
    PAPER_SYSTEM2,
    WORDS,
    classify,
    half_width,
)
from analysis.fit import ParamEstimate
from analysis.options import AnalysisOptions
from analysis.report import analyse, write_report
from tests.analysis.synthetic_scaling import _row, make_split_thinking, make_trials, with_costs

PAPER_DATA = PAPER_RATES["data"].value  # +35.98%
OPTIONS = AnalysisOptions(bootstrap=200, seed=0)
COSTS = {"cost_of_6n": {"ebt": 8.0, "transformer_pp": 1.0}, "flop_per_s": {"ebt": 1e9, "transformer_pp": 2e9}}


def data_axis(relative: float, noise: float, n: int = 8, seed: int = 0, vocab: float = 512) -> pd.DataFrame:
    """A data axis whose true EBT rate is (1 + relative) x the Transformer++'s (0.2): loss = A x^-alpha with
    log-normal noise, both families at the same tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for family, alpha in (("ebt", 0.2 * (1 + relative)), ("transformer_pp", 0.2)):
        for i, tokens in enumerate(np.geomspace(1e6, 1e9, n)):
            loss = 4.5 * (tokens / 1e6) ** -alpha * math.exp(noise * rng.standard_normal())
            rows.append(_row(family, "data", i, tokens=tokens, val_loss=loss, vocab_size=vocab))
    return with_costs(pd.DataFrame(rows), **COSTS)


def data_claim(trials: pd.DataFrame, view: str = "x") -> tuple[str | None, ParamEstimate]:
    (claim,) = [a for a in analyse(trials, OPTIONS).claims.axes if a.axis == "data"]
    return claim.cells[view].word, claim.cells[view].ours


def test_the_words_follow_their_definitions() -> None:
    assert classify(ParamEstimate(0.3, 0.2, 0.4), 0.36) == AGREES  # holds the paper's, excludes zero
    assert classify(ParamEstimate(0.0, -0.1, 0.1), 0.36) == CONTRADICTS  # excludes the paper's
    assert classify(ParamEstimate(0.5, 0.4, 0.6), 0.36) == CONTRADICTS  # above it counts too
    assert classify(ParamEstimate(0.1, -0.2, 0.5), 0.36) == INCONCLUSIVE  # holds both
    assert classify(ParamEstimate(0.1, -0.2, 0.5), None) is None  # no verified paper number
    assert classify(ParamEstimate(0.1, math.nan, math.nan), 0.36) is None  # no interval
    assert half_width(ParamEstimate(0.1, -0.2, 0.5)) == pytest.approx(0.35)
    assert set(WORDS) == {AGREES, CONTRADICTS, INCONCLUSIVE}


@pytest.mark.parametrize(
    ("relative", "noise", "word"),
    [
        (PAPER_DATA, 0.002, AGREES),  # the paper's rate, measured tightly
        (0.0, 0.002, CONTRADICTS),  # equal rates, measured tightly: the paper's number is excluded
        (PAPER_DATA, 0.3, INCONCLUSIVE),  # the paper's rate, but too noisy to tell it from zero
    ],
)
def test_synthetic_truths_reach_each_word(relative: float, noise: float, word: str) -> None:
    got, ours = data_claim(data_axis(relative, noise))
    assert got == word, ours
    assert ours.contains(relative)  # the interval holds the truth it was made from
    assert word != INCONCLUSIVE or half_width(ours) > PAPER_DATA / 2  # wide enough to hold 0 and the paper's


def test_every_view_is_classified_and_an_axis_without_a_paper_number_gets_no_word() -> None:
    trials = data_axis(PAPER_DATA, 0.002)
    for view in ("flops", "time"):  # cost proportional to tokens: the same rate per FLOP and per second
        assert data_claim(trials, view)[0] == AGREES
    params = make_trials(axes=("params",), n=7, noise=0.01).assign(vocab_size=512)
    (claim,) = analyse(params, OPTIONS).claims.axes
    assert PAPER_RATES["params"].value is None and claim.cells["x"].word is None
    assert "no paper number" in claim.cells["x"].note and "EBT faster" in claim.cells["x"].note


def test_system2_rows_compare_the_gain_in_and_out_of_distribution() -> None:
    paper = {split: PAPER_SYSTEM2[split].value for split in ("val", "ood")}
    trials = data_axis(PAPER_DATA, 0.002)
    agree = analyse(trials, OPTIONS, thinking=make_split_thinking(paper, noise=0.02)).claims.system2
    assert [(s.split, s.mode, s.cell.word) for s in agree] == [
        ("val", "verify", AGREES),
        ("ood", "verify", AGREES),
    ]
    none = analyse(trials, OPTIONS, thinking=make_split_thinking({"val": 0.0, "ood": 0.0})).claims.system2
    assert [s.cell.word for s in none] == [CONTRADICTS, CONTRADICTS]


def test_the_report_opens_with_the_first_screen_and_the_claims_table(tmp_path) -> None:
    """Five axes and System-2: six short lines, then the claims table; the same in summary.json."""
    parts = []
    for k, axis in enumerate(("data", "batch", "params", "depth")):
        d = data_axis(0.1 * k, 0.01, seed=k).assign(axis=axis)
        d["name"] = d["name"].str.replace("data", axis)
        parts.append(
            d.assign(batch_size=d["tokens"] / 1e6, n_params_non_embedding=d["tokens"], n_layers=d["tokens"])
        )
    flops = with_costs(make_trials(axes=(), flops_axis=True, noise=0.01).assign(vocab_size=512), **COSTS)
    trials = pd.concat([*parts, flops], ignore_index=True)
    thinking = make_split_thinking({"val": 0.05, "ood": 0.1})
    paths = write_report(trials, tmp_path, {}, thinking, OPTIONS)
    summary = json.loads(paths["summary"].read_text())
    screen = summary["first_screen"]
    assert len(screen) == 6 and all(len(line) <= 160 for line in screen), screen
    heads = [line.split(":")[0] for line in screen]
    assert heads == [
        "data",
        "params",
        "depth",
        "batch",
        "flops",
        "System-2 gain (self-verification, 8 passes)",
    ]
    md = paths["markdown"].read_text()
    title, first, claims = md.split("\n\n")[:3]
    assert title.startswith("# ") and first.splitlines() == [f"- {line}" for line in screen]
    assert claims.startswith("## Claims")
    assert "<ul class='first-screen'>" in paths["html"].read_text().split("<h2>")[0]
    c = summary["claims"]
    assert [a["axis"] for a in c["axes"]] == ["data", "params", "depth", "batch", "flops"]
    assert {r["view"] for r in c["records"] if r["claim"] == "data"} == {
        "per axis x",
        "per training FLOP",
        "per device-second",
    }
    assert c["metrics"]["claims.data.paper"] == PAPER_DATA
    assert c["metrics"]["claims.data.x.word"] in (-1.0, 0.0, 1.0)
    assert c["system2"][1]["split"] == "ood" and c["system2"][1]["paper"] == PAPER_SYSTEM2["ood"].value
    assert c["paper"] == PAPER and "2507.02092" in c["paper"]  # the citation travels with the numbers


def test_the_learning_check_names_trials_near_the_uniform_guess() -> None:
    trials = data_axis(0.0, 0.002)
    learned = analyse(trials, OPTIONS).learning
    assert learned.all_learned
    assert learned.verdict.startswith(
        "Learning check: every one of the 16 fitted trial rows learned (val_loss at most 80% of the uniform "
        "guess ln V; the worst: "
    )
    worse = trials.assign(val_loss=np.where(trials["tokens"] < 2e6, 6.0, trials["val_loss"]))  # ln 512 = 6.24
    check = analyse(worse, OPTIONS).learning
    assert not check.all_learned and len(check.not_learned) == 2  # the smallest point of each family
    assert "2 of 16 fitted trial rows did NOT learn" in check.verdict
    no_vocab = analyse(trials.drop(columns="vocab_size"), OPTIONS).learning
    assert not no_vocab.all_learned and "not made" in no_vocab.verdict


def test_an_isoflop_grid_corner_that_did_not_learn_is_told_apart_from_the_frontier() -> None:
    grid = make_trials(axes=(), flops_axis=True, noise=0.01).assign(vocab_size=512)
    C, N = grid["flops_budget"], grid["n_params"]
    biggest = N.groupby(C).transform("max") == N  # the largest model at each budget: off the frontier here
    check = analyse(grid.assign(val_loss=grid["val_loss"].where(~biggest, 6.0)), OPTIONS).learning
    assert len(check.not_learned) == biggest.sum() and check.frontier_learned
    assert "off its frontier" in check.verdict
    record = json.loads(json.dumps(check.to_dict()))
    assert set(record) == {
        "fraction",
        "all_learned",
        "frontier_learned",
        "unchecked",
        "per_axis",
        "not_learned",
        "verdict",
    }
    assert (record["fraction"], record["frontier_learned"], record["all_learned"]) == (
        check.fraction,
        True,
        False,
    )
    assert len(record["not_learned"]) == biggest.sum() and record["verdict"] == check.verdict


# ------------------------------------------------------------------------- the lines a reader sees first


def _cell(value: float, lo: float, hi: float, word: str | None = None, note: str = ""):
    from analysis.claims import ClaimCell

    return ClaimCell(ParamEstimate(value, lo, hi), word, note)


def test_an_axis_line_gives_our_rate_the_paper_s_and_each_view_s_word() -> None:
    from analysis.claims import AxisClaim, Claims, PaperNumber

    claim = AxisClaim(
        "data",
        PAPER_RATES["data"],
        {
            "x": _cell(-0.29, -0.76, 0.68, INCONCLUSIVE),
            "flops": _cell(0.1, 0.02, 0.2, None, "no paper number (EBT faster at 95%)"),
            "time": _cell(0.1, math.nan, math.nan, None, "no word: no interval"),
        },
    )
    unverified = AxisClaim(
        "params",
        PaperNumber(None, "Fig. 5a"),
        {"x": _cell(0.05, -0.1, 0.2, None, "no paper number (no difference at 95%)")},
    )
    missing = AxisClaim(
        "depth",
        PAPER_RATES["depth"],
        {
            "x": _cell(math.nan, math.nan, math.nan, None, "not compared (no fits)"),
            "flops": _cell(math.nan, math.nan, math.nan, None, "not compared (no fits)"),
        },
    )
    lines = Claims([claim, unverified, missing], [], 0.95, "val_loss").first_screen()
    assert lines == [
        "data: EBT's rate -29% [-76%, +68%] vs Transformer++'s, paper +35.98%: inconclusive"
        " | per FLOP: EBT faster | per second: no interval",
        "params: EBT's rate +5% [-10%, +20%] vs Transformer++'s, paper not verified: no difference",
        "depth: not compared (too few usable trials; see its section)",
    ]


def test_a_cell_says_its_estimate_interval_half_width_and_word() -> None:
    assert _cell(0.25, 0.2, 0.3, AGREES).text() == "+25% [+20%, +30%] ±5%: agrees"
    assert _cell(0.25, 0.2, 0.3, AGREES).text(1) == "+25.0% [+20.0%, +30.0%] ±5.0%: agrees"
    assert (
        _cell(0.25, math.nan, math.nan, None, "no word: no interval").text() == "+25%: no word: no interval"
    )
    assert (
        _cell(math.nan, math.nan, math.nan, None, "not compared (no fits)").text() == "not compared (no fits)"
    )
    assert _cell(math.nan, math.nan, math.nan).text() == "–"
    record = _cell(0.25, 0.2, 0.3, AGREES).to_dict()
    assert record == {
        "ours": {"value": 0.25, "lo": 0.2, "hi": 0.3},
        "half_width": pytest.approx(0.05),
        "word": AGREES,
        "note": "",
    }
    assert _cell(0.25, math.nan, math.nan).to_dict()["half_width"] is None


def test_the_system2_line_and_records_name_each_split() -> None:
    from analysis.claims import Claims, System2Claim

    s2 = [
        System2Claim("val", PAPER_SYSTEM2["val"], "verify", 8.0, _cell(-0.015, -0.031, 0.002, CONTRADICTS)),
        System2Claim("ood", PAPER_SYSTEM2["ood"], "verify", 8.0, _cell(0.02, 0.001, 0.05, CONTRADICTS)),
    ]
    claims = Claims([], s2, 0.95, "val_loss")
    assert claims.first_screen() == [
        "System-2 gain (self-verification, 8 passes): val -1.5% [-3.1%, +0.2%] vs paper +11.84%: "
        "contradicts; OOD +2.0% [+0.1%, +5.0%] vs paper +29.00%: contradicts"
    ]
    records = claims.records()
    assert [(r["claim"], r["view"]) for r in records] == [
        ("System-2 validation", "self-verification, 8 passes"),
        ("System-2 out of distribution", "self-verification, 8 passes"),
    ]
    assert records[1]["paper"] == 0.29 and records[1]["paper_source"] == PAPER_SYSTEM2["ood"].source
    as_dict = s2[1].to_dict()
    assert as_dict["paper_source"] == PAPER_SYSTEM2["ood"].source and as_dict["split"] == "ood"
    assert as_dict["mode"] == "verify" and as_dict["forward_passes"] == 8.0 and as_dict["word"] == CONTRADICTS
    metrics = claims.metrics()
    assert metrics["claims.system2.ood.word"] == -1.0 and metrics["claims.system2.ood.paper"] == 0.29
    assert metrics["claims.system2.val.relative"] == -0.015
