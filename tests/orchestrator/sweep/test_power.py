"""orchestrator/sweep/power.py: the plan's power section, wired from a real spec's planned trials and from
earlier sweeps' trials (noise and exponents measured, else the defaults, and the plan says which)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.sweep.expand import expand
from orchestrator.sweep.plan import plan
from orchestrator.sweep.power import DEFAULT_NOISE, measured_inputs, planned_designs
from orchestrator.sweep.spec import load_spec
from tests.analysis.synthetic_scaling import make_trials, with_seeds
from tests.helpers import REPO, cli


def test_the_study_spec_plans_six_x_per_family_on_every_axis_with_its_seeds() -> None:
    p = plan(expand(load_spec(REPO / "sweeps" / "study.yaml")), calibrate=False)
    designs = planned_designs(p)
    assert set(designs) == {"data", "batch", "params", "depth", "flops"}
    for axis, (x, seeds) in designs.items():
        assert seeds == 2
        assert {fam: v.size for fam, v in x.items()} == {"ebt": 6, "transformer_pp": 6}, axis
    assert designs["depth"][0]["ebt"].tolist() == [1, 2, 3, 4, 6, 8]
    spec_tokens = [128000, 192000, 288000, 432000, 648000, 1024000]  # trained in whole steps of 512 tokens
    assert designs["data"][0]["ebt"] == pytest.approx(spec_tokens, rel=2e-3)


def test_noise_and_exponents_are_measured_from_earlier_trials() -> None:
    """Known truth: both families on pure power laws (Transformer++ alpha 0.1), three seeds of each of 8
    configurations, every loss off by log-noise sd 0.03; an empty store gives the defaults."""
    trials = with_seeds(make_trials(axes=("data",), n=8, noise=0.0), n_seeds=3, spread=0.0)
    rng = np.random.default_rng(7)
    alpha = np.where(trials["family"] == "ebt", 0.13, 0.1)
    law = 5.0 * (trials["tokens"] / 1e6) ** -alpha
    trials["val_loss"] = law * np.exp(0.03 * rng.standard_normal(len(trials)))
    inputs = measured_inputs(trials)
    assert inputs.noise == pytest.approx(0.03, rel=0.25)
    assert "measured" in inputs.noise_source and "2 power-law fits" in inputs.noise_source
    assert set(inputs.alphas) == {"data"} and inputs.alphas["data"] == pytest.approx(0.1, abs=0.02)
    empty = measured_inputs(trials.iloc[:0])
    assert empty.noise == DEFAULT_NOISE and "default" in empty.noise_source and empty.alphas == {}


def test_sweep_plan_prints_power_per_axis(tmp_path: Path) -> None:
    """The real command on a shipped spec, no store yet: the defaults, and figures for the data axis."""
    spec = (REPO / "sweeps" / "smoke-data.yaml").read_text()
    (tmp_path / "s.yaml").write_text(spec.replace("output_dir: outputs", f"output_dir: {tmp_path / 'out'}"))
    done = cli("sweep", "plan", str(tmp_path / "s.yaml"), "--json")
    assert done.returncode == 0, done.stderr
    power = json.loads(done.stdout)["power"]
    assert "default" in power["inputs"]["noise_source"]
    (data,) = power["axes"]
    assert data["axis"] == "data" and data["effect"] == pytest.approx(0.3598)
    assert 0 < data["median_width"] < np.inf and 0 <= data["power"] <= 1 and data["detectable"] > 0
    table = cli("sweep", "plan", str(tmp_path / "s.yaml"))
    assert "power: what each axis can tell" in table.stdout and "noise: default 0.02" in table.stdout
    assert "power" not in json.loads(
        cli("sweep", "plan", str(tmp_path / "s.yaml"), "--json", "--no-power").stdout
    )
