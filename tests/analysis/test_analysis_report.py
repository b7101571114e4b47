"""write_report: files, embedded plots, the fitted numbers in both formats, exclusions, provenance."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare import axis_points
from analysis.data import split_trials, tidy_trials
from analysis.fit import fit_power
from analysis.options import AnalysisOptions
from analysis.report import write_report
from tests.analysis.synthetic_scaling import make_thinking, make_trials

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_unit_report(out: Path) -> tuple[pd.DataFrame, dict]:
    """The report the contract tests read: two fitted axes, a flops grid, one diverged trial, a one-point
    depth axis, System-2 curves. Written inside each test, not by a fixture: `make mutation` links a test only
    to the code it called itself and orders a mutant's tests by their recorded call time, which leaves out
    set-up, so a shared report would hide the report's code from the tests and would be run first."""
    trials = make_trials(axes=("data", "params"), n=7, noise=0.01, flops_axis=True)
    trials.loc[1, ["status", "status_reason"]] = ["diverged", "loss NaN at step 120"]
    lonely = trials.iloc[[0]].assign(axis="depth", name="ebt-depth-lonely", n_layers=4)  # 1 point: no fit
    trials = pd.concat([trials, lonely], ignore_index=True).astype(str)  # MLflow-style strings
    provenance = {"spec": {"name": "unit-sweep", "seeds": [0]}, "code_version": "deadbeef1234"}
    paths = write_report(trials, out, provenance, make_thinking(), AnalysisOptions(bootstrap=30, seed=0))
    return trials, paths


def test_files_are_written(tmp_path):
    _, paths = write_unit_report(tmp_path)
    assert set(paths) >= {"html", "markdown", "plots_dir"}
    for key in ("html", "markdown", "summary"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    pngs = sorted(p.name for p in paths["plots_dir"].glob("*.png"))
    for name in (
        "data_fit.png",
        "data_residuals.png",
        "params_fit.png",
        "flops_fit.png",
        "isoflop.png",
        "thinking.png",
    ):
        assert name in pngs
    for p in paths["plots_dir"].glob("*.png"):
        assert p.read_bytes()[:8] == PNG_MAGIC


def test_html_is_self_contained_with_every_plot_embedded(tmp_path):
    _, paths = write_unit_report(tmp_path)
    html = paths["html"].read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(embedded) == len(list(paths["plots_dir"].glob("*.png")))
    assert all(base64.b64decode(e)[:8] == PNG_MAGIC for e in embedded)
    assert not re.search(r"<(script|link)\b", html)
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", html)


def test_markdown_links_the_pngs(tmp_path):
    _, paths = write_unit_report(tmp_path)
    md = paths["markdown"].read_text()
    for p in paths["plots_dir"].glob("*.png"):
        assert f"](plots/{p.name})" in md


def test_tables_hold_the_fitted_numbers(tmp_path):
    trials, paths = write_unit_report(tmp_path)
    ok, _ = split_trials(tidy_trials(trials))
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    alphas = {}
    for fam in ("ebt", "transformer_pp"):
        pts = axis_points(ok, "data")
        pts = pts[pts["family"] == fam]
        fit = fit_power(pts["x"].to_numpy(), pts["y"].to_numpy(), bootstrap=0)  # point estimates need no seed
        alphas[fam] = fit.params["alpha"].value
        for text in (html, md):
            assert f"{alphas[fam]:.4g}" in text
            assert f"{fit.params['A'].value:.4g}" in text
    rel = (alphas["ebt"] - alphas["transformer_pp"]) / alphas["transformer_pp"]
    assert f"EBT scales {100 * rel:.0f}% faster than Transformer++ on the data axis" in md
    summary = json.loads(paths["summary"].read_text())
    assert summary["axes"]["data"]["fits"]["ebt"]["alpha"]["value"] == pytest.approx(alphas["ebt"])


def test_headline_excluded_trials_too_few_points_and_provenance(tmp_path):
    trials, paths = write_unit_report(tmp_path)
    md = paths["markdown"].read_text()
    headline = md.split("## Every verdict\n\n")[1].split("\n\n")[0]  # after the first screen and claims
    assert "EBT scales" in headline and "data axis" in headline
    assert trials.loc[1, "name"] in md and "loss NaN at step 120" in md  # the excluded list
    assert "1 point(s) for the 2 parameters" in md  # the depth axis is reported, not fitted
    assert "deadbeef1234" in md and "unit-sweep" in md
    html = paths["html"].read_text()
    assert "deadbeef1234" in html and "unit-sweep" in html


def test_thinking_table_reports_the_perplexity_reduction(tmp_path):
    thinking_table = make_thinking()
    _, paths = write_unit_report(tmp_path)
    md = paths["markdown"].read_text()
    ebt = thinking_table[(thinking_table["family"] == "ebt") & (thinking_table["mode"] == "steps")]
    gain = 1 - ebt["val_perplexity"].iloc[-1] / ebt["val_perplexity"].iloc[0]
    assert f"+{100 * gain:.1f}%" in md


def test_a_table_with_nothing_fittable_still_reports(tmp_path):
    trials = make_trials(axes=("data",), n=3)
    trials["status"] = "failed"
    paths = write_report(trials, tmp_path, {}, options=AnalysisOptions(bootstrap=20))
    md = paths["markdown"].read_text()
    assert "No axis has fits for both" in md
    assert np.all([n in md for n in trials["name"]])


def test_a_grid_law_without_a_floor_is_flagged_and_gets_no_verdict(tmp_path):
    """The flops grid with E = 0 (pure power terms): E is not identified for either family, the report says
    so next to the parameter and in the grid verdict, which is not significant whatever the exponents."""
    trials = make_trials(axes=("data",), n=6, noise=0.01, flops_axis=True)
    flops = trials["axis"] == "flops"
    N, D = trials.loc[flops, "n_params"], trials.loc[flops, "tokens"]
    ebt = trials.loc[flops, "family"] == "ebt"
    noise = np.exp(0.01 * np.random.default_rng(0).standard_normal(int(flops.sum())))
    trials.loc[flops, "val_loss"] = (400 * N ** np.where(ebt, -0.4, -0.3) + 400 * D**-0.3) * noise
    options = AnalysisOptions(bootstrap=200, seed=0, grid_form="shared")
    paths = write_report(trials, tmp_path, {}, options=options)
    md = paths["markdown"].read_text()
    summary = json.loads(paths["summary"].read_text())
    assert "Grid law L = E + A*N^-alpha + B*D^-alpha" in md
    grid = summary["grid_rate"]
    assert grid["identified"] is False and grid["significant"] is False
    assert "not identified" in grid["verdict"] and "add points at" in grid["verdict"]
    assert grid["verdict"].startswith("No verdict on the flops grid axis:")
    for fam in ("ebt", "transformer_pp"):
        fit = summary["compute_optimal"][fam]["chinchilla"]
        assert "E" in fit["flags"] and fit["identified"] is False
        assert summary["compute_optimal"][fam]["backtest"]["holdout"].startswith("the largest budget")
    assert re.search(r"\| EBT \| E \| [^|]+ \| [^|]+ \| no: E = ", md)


# ------------------------------------------------------------------ the report's contract with its readers


def _md_tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every markdown table, cells unescaped enough to compare ('\\|' kept as is)."""
    tables, lines = [], md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            head = [c.strip() for c in line.strip("|").split(" | ")]
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("| "):
                rows.append([c.strip() for c in lines[j][2:-2].split(" | ")])
                j += 1
            tables.append((head, rows))
    return tables


def test_the_outline_is_the_same_in_markdown_and_html(tmp_path):
    """Readers navigate by the sections: a fixed order, the same headings in both formats."""
    _, paths = write_unit_report(tmp_path)
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    md_h2 = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert md_h2 == [
        "Claims: the EBT paper beside this study (95% intervals)",
        "Every verdict",
        "Scaling rates",
        "Equal compute and equal time",
        "Data axis (x = tokens)",
        "Params axis (x = n_params_non_embedding)",
        "Depth axis (x = n_layers)",
        "Flops axis (x = flops)",
        "Compute-optimal allocation (flops axis)",
        "System-2 thinking",
        "Backtests",
        "Seed noise",
        "Excluded trials",
        "Provenance",
    ]
    import html as html_lib

    for level in (1, 2, 3):
        in_md = [line[level + 1 :] for line in md.splitlines() if line.startswith("#" * level + " ")]
        in_html = [html_lib.unescape(h) for h in re.findall(rf"<h{level}>(.*?)</h{level}>", html)]
        assert in_md == in_html and in_md
    assert md.startswith("# EBT vs Transformer++ scaling report\n")
    assert "<title>EBT vs Transformer++ scaling report</title>" in html


def test_the_rates_table_says_what_summary_json_says(tmp_path):
    """The scaling-rates table and summary.json carry the same numbers, verdicts and significance."""
    _, paths = write_unit_report(tmp_path)
    summary = json.loads(paths["summary"].read_text())
    tables = _md_tables(paths["markdown"].read_text())
    head, rows = next(t for t in tables if t[0][:2] == ["axis", "x"])
    assert head == [
        "axis",
        "x",
        "α EBT [CI]",
        "α Transformer++ [CI]",
        "relative difference [CI]",
        "significant",
        "verdict",
    ]
    assert [r[0] for r in rows] == ["data", "params", "depth", "flops"]  # depth: one point, no fit
    notes = summary["axes"]["depth"]["notes"]
    why = f"EBT: {notes['ebt']}; Transformer++: {notes['transformer_pp']}"
    assert rows[2] == ["depth", "n_layers", "–", "–", "–", "–", why]
    for row in (r for r in rows if r[0] != "depth"):
        axis = summary["axes"][row[0]]
        assert row[1] == axis["x"]
        assert row[5] == ("yes" if axis["significant"] else "no")
        assert row[6] == axis["verdict"]
        rel = axis["relative_exponent_difference"]
        assert row[4] == f"{100 * rel['value']:+.1f}% [{100 * rel['lo']:+.1f}%, {100 * rel['hi']:+.1f}%]"
        a = axis["fits"]["ebt"]["alpha"]
        assert row[2] == f"{a['value']:.4g} [{a['lo']:.4g}, {a['hi']:.4g}]"
    assert summary["axes"]["depth"]["notes"]["ebt"].startswith("1 point(s) for the 2 parameters")
    assert set(summary) >= {
        "first_screen",
        "headline",
        "claims",
        "axes",
        "compute_optimal",
        "excluded",
        "system2",
    }
    assert (summary["y"], summary["form"], summary["level"], summary["bootstrap"]) == (
        "val_loss",
        "power",
        0.95,
        30,
    )


def test_the_excluded_and_provenance_tables_list_what_they_name(tmp_path):
    trials, paths = write_unit_report(tmp_path)
    summary = json.loads(paths["summary"].read_text())
    tables = _md_tables(paths["markdown"].read_text())
    head, rows = next(t for t in tables if t[0][0] == "name")
    assert head == ["name", "family", "axis", "status", "reason"]
    assert [r[0] for r in rows] == [e["name"] for e in summary["excluded"]]
    assert [trials.loc[1, "name"], "ebt", "data", "diverged", "diverged: loss NaN at step 120"] in rows
    head, rows = next(t for t in tables if t[0] == ["key", "value"])
    assert ["code_version", "deadbeef1234"] in rows


def test_the_compute_section_tables_hold_the_allocation_and_the_isoflop_minima(tmp_path):
    _, paths = write_unit_report(tmp_path)
    summary = json.loads(paths["summary"].read_text())
    tables = dict((tuple(h), r) for h, r in _md_tables(paths["markdown"].read_text()))
    alloc = tables[("family", "C", "N*", "CI", "D*", "CI", "val_loss at optimum")]
    for fam, label in (("ebt", "EBT"), ("transformer_pp", "Transformer++")):
        mine = [r for r in alloc if r[0] == label]
        assert len(mine) == len(summary["compute_optimal"][fam]["allocation"]) > 0
        for r, a in zip(mine, summary["compute_optimal"][fam]["allocation"], strict=True):
            assert r[1] == f"{a['C']:.4g}" and r[2] == f"{a['N_opt']:.4g}" and r[4] == f"{a['D_opt']:.4g}"
            assert r[6] == f"{a['loss_opt']:.4g}"
    assert ("family", "C", "N*", "CI", "D*", "val_loss at N*", "minimum inside sampled N") in tables
    iso = tables[("family", "quantity (N* = k_N C^a, D* = k_D C^b)", "value", "CI")]
    assert {r[1] for r in iso} >= {"a", "b"}


def test_the_thinking_views_and_headline_say_what_summary_json_says(tmp_path):
    _, paths = write_unit_report(tmp_path)
    summary = json.loads(paths["summary"].read_text())
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    tables = _md_tables(md)
    head, rows = next(t for t in tables if t[0][:2] == ["text", "family"])
    assert head[:7] == ["text", "family", "mode", "steps", "candidates", "forward passes", "perplexity"]
    tpp = [r for r in rows if r[1] == "Transformer++"]
    assert len(tpp) == 1 and tpp[0][5] == "1 (any budget)" and tpp[0][-1] == ""  # one measurement, no CI
    ebt = [r for r in rows if r[1] == "EBT"]
    curves = [c for c in summary["system2"]["curves"] if c["family"] == "ebt"]
    assert [r[5] for r in ebt] == [f"{c['forward_passes']:.4g}" for c in curves]
    assert all(r[-1] == "" for r in ebt)  # make_thinking has no per-window losses: no intervals
    assert "Intervals " in md.split("## System-2 thinking")[1].split("##")[0]
    head, rows = next(t for t in tables if t[0][:2] == ["axis", "view"])
    for r in (r for r in rows if r[1] == "per axis x" and "gap" in summary["axes"][r[0]]):
        assert r[5] == summary["axes"][r[0]]["gap"]["ahead"]
    assert {r[5] for r in rows} >= {"EBT", "neither"}
    assert " Not compared (too few usable trials): depth axis." in summary["headline"]
    assert summary["headline"].startswith("Data axis — Per tokens: EBT is ahead at tokens = 1e+09")
    assert "<thead><tr><th>axis</th><th>x</th><th>α EBT [CI]</th>" in html


def test_markdown_cells_keep_a_table_one_row_per_record(tmp_path):
    """A '|' or a newline inside a value (a status reason, a path) must not split the table."""
    trials = make_trials(axes=("data",), n=6)
    trials.loc[0, ["status", "status_reason"]] = ["failed", "RuntimeError: a | b\nin step 3"]
    paths = write_report(trials, tmp_path, {"note": "x | y"}, options=AnalysisOptions(bootstrap=0))
    md = paths["markdown"].read_text()
    assert "| failed: RuntimeError: a \\| b in step 3 |" in md
    assert "| note | x \\| y |" in md


def test_a_fit_the_data_do_not_pin_down_gets_a_paragraph_and_an_identified_one_none(tmp_path):
    """Transformer++'s loss flat in tokens: its exponent's interval crosses zero, so the axis section says
    so for that family only (the study's params axis, 2026-12-07)."""
    trials = make_trials(axes=("data",), n=6, noise=0.01)
    tpp = trials["family"] == "transformer_pp"
    flat = 4.0 * np.exp(0.01 * np.random.default_rng(3).standard_normal(int(tpp.sum())))
    trials.loc[tpp, "val_loss"] = flat
    md = write_report(trials, tmp_path, {}, options=AnalysisOptions(bootstrap=100, seed=0))["markdown"]
    section = md.read_text().split("## Data axis")[1].split("\n## ")[0]
    assert "Transformer++'s power law is not identified: alpha's interval" in section
    assert "EBT's power law is" not in section


def test_summary_json_writes_any_value_numpy_scalars_as_numbers_and_the_rest_as_text():
    from analysis.report import _json_default

    record = {"n": np.int64(3), "x": np.float32(0.5), "where": Path("/data/run"), "missing": pd.NA}
    assert json.loads(json.dumps(record, default=_json_default)) == {
        "n": 3,
        "x": 0.5,
        "where": "/data/run",
        "missing": "<NA>",
    }
