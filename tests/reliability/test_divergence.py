"""Guarantee 4: a diverging trial stops early with status `diverged` and its reason, the sweep goes on, and
the report lists it. Here every Transformer++ trial gets a learning rate of 1000 (its loss explodes within a
few steps) while the EBT trials train normally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import child_runs, cli, record_fault, write_spec


@pytest.mark.slow
def test_diverged_trials_are_recorded_and_reported_while_the_sweep_goes_on(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "diverge", tokens=8 * 32 * 40, checkpoint_every=10)
    raw = spec.read_text()
    spec.write_text(raw + "family_overrides:\n  transformer_pp:\n    optim:\n      lr: 1000.0\n")
    run = cli("sweep", "run", str(spec))
    trials = tmp_path / "out" / "diverge" / "trials"
    results = {d.name: json.loads((d / "result.json").read_text()) for d in trials.iterdir()}
    runs = child_runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}", "diverge")
    diverged = {n: r for n, r in results.items() if r["status"] == "diverged"}
    finished = {n: r for n, r in results.items() if r["status"] == "finished"}
    record_fault(
        "4 divergence",
        "lr 1000 on the Transformer++ trials",
        injected=2,
        survived=len(finished),
        lost=4 - len(diverged) - len(finished),
    )
    assert run.returncode == 0, run.stdout + run.stderr  # diverged is a final outcome, not a failure
    assert sorted(n.split("-")[0] for n in diverged) == ["tpp", "tpp"]
    assert sorted(n.split("-")[0] for n in finished) == ["ebt", "ebt"]
    for r in diverged.values():
        assert r["reason"] and r["steps"] < 40 and r["final_val_loss"] is None  # stopped early, says why
    tags = {r.data.tags["ebtscale.family"]: r.data.tags for r in runs}
    assert tags["transformer_pp"]["ebtscale.status"] == "diverged"
    assert tags["transformer_pp"]["ebtscale.status_reason"]
    assert "diverged" in cli("sweep", "status", str(spec)).stdout

    reported = cli("report", str(spec), "--bootstrap", "50")
    assert reported.returncode == 0, reported.stdout + reported.stderr
    summary = json.loads((tmp_path / "out" / "diverge" / "report" / "summary.json").read_text())
    listed = {row["name"]: row for row in summary["excluded"]}
    assert {n.rsplit("-", 1)[0] for n in diverged} <= set(listed)
    assert all(listed[n.rsplit("-", 1)[0]]["status"] == "diverged" for n in diverged)
    html = (tmp_path / "out" / "diverge" / "report" / "report.html").read_text()
    assert "Excluded trials" in html and "diverged" in html
