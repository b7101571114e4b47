"""End-to-end sweeps through the real CLI: Ray Tune (embedded local Ray) launching Ray Train TorchTrainers
running DeepSpeed, into a real MLflow sqlite store. Slow-ish (Ray start-up), so each test does a lot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import child_runs, cli, result_mtimes, tiny_trial, write_spec


@pytest.mark.slow
def test_sweep_runs_once_reruns_nothing_and_exports(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "four", tokens=8 * 32 * 6)
    first = cli("sweep", "run", str(spec))
    assert first.returncode == 0, first.stdout + first.stderr
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    runs = child_runs(uri, "four")
    assert len(runs) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["ebtscale.family"] for r in runs} == {"ebt", "transformer_pp"}
    assert {r.data.params["model.d_model"] for r in runs} == {"32", "48"}
    assert all(r.data.metrics["final_val_loss"] > 0 for r in runs)

    before = result_mtimes(tmp_path / "out")
    second = cli("sweep", "run", str(spec))
    assert second.returncode == 0, second.stderr
    assert result_mtimes(tmp_path / "out") == before  # nothing trained again
    assert sorted(r.info.run_id for r in child_runs(uri, "four")) == sorted(r.info.run_id for r in runs)

    status = cli("sweep", "status", str(spec))
    assert status.returncode == 0 and status.stdout.count("finished") == 4

    out = tmp_path / "runs.csv"
    exported = cli("sweep", "export", str(spec), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 4 and set(frame["axis"]) == {"params"}
    assert frame["n_params"].dtype.kind in "if" and (frame["val_loss"] > 0).all()
    # the report's equal-compute view reads what each trial executed: less than the study's count for the
    # EBT (reuse_observed_kv, the default), the same for Transformer++
    executed = frame.set_index("family")["flops_executed"] / frame.set_index("family")["flops"]
    assert (executed["ebt"] < 1).all() and (executed["transformer_pp"] == 1).all()
    by_family = frame.groupby("family")["n_params_non_embedding"].apply(sorted)
    assert all(sizes[0] < sizes[1] for sizes in by_family)

    # System-2 curves of the largest EBT, then the report from this real store
    thought = cli("think", str(spec), "--steps", "3", "--candidates", "1,2", "--batches", "1")
    assert thought.returncode == 0, thought.stderr
    reported = cli("report", str(spec), "--bootstrap", "100")
    assert reported.returncode == 0, reported.stderr
    report_dir = tmp_path / "out" / "four" / "report"
    html = (report_dir / "report.html").read_text()
    summary = json.loads((report_dir / "summary.json").read_text())
    for family in ("ebt", "transformer_pp"):
        alpha = summary["axes"]["params"]["fits"][family]["alpha"]["value"]
        assert f"{alpha:.4g}" in html  # the table holds the fitted exponent
    assert summary["learning"]["unchecked"] == 0  # the vocabulary size came back from MLflow
    screen = summary["first_screen"]  # the answer first: a line for the params axis, one for System-2
    assert len(screen) == 2 and reported.stderr.split("report: ")[0].splitlines()[-2:] == screen
    assert html.count("data:image/png;base64,") >= 3  # scaling plot, residuals, thinking curves
    assert list((report_dir / "plots").glob("*.png"))
    assert "thinking" in html.lower()
    from mlflow.tracking import MlflowClient

    parent = runs[0].data.tags["mlflow.parentRunId"]
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/report.html", "report/report.md", "report/claims.json"} <= logged
    assert "claims.params.x.relative" in MlflowClient(uri).get_run(parent).data.metrics


def test_launcher_decides_where_a_trial_trains_what_it_asks_ray_for_and_the_dashboard() -> None:
    """auto: a one-worker trial trains in its Tune actor, which holds the trial's CPUs/GPUs; a multi-worker
    trial (or any trial with ray_train) runs a TorchTrainer, whose waiting Tune actor takes no CPU, and needs
    the dashboard (Ray Train's State API)."""
    from orchestrator.sweep.runner import TrialJob, trial_resources, uses_ray_train

    def job(launcher: str, workers: int) -> dict:
        resources = {"num_workers": workers, "cpus_per_worker": 2, "gpus_per_worker": 0}
        cfg = tiny_trial(Path("outputs"), resources=resources)
        typed = TrialJob("abc", cfg, "sqlite:///x.db", "sweep", "/ray", launcher, "now")
        payload = typed.to_dict()  # what crosses into Ray: plain data, read back as the same job
        assert TrialJob.from_dict(payload) == typed and payload["config"]["resources"] == resources
        return payload

    assert not uses_ray_train("auto", 1)
    assert uses_ray_train("auto", 2) and uses_ray_train("ray_train", 1)
    in_actor = TrialJob.from_dict(job("auto", 1)).in_tune_actor
    assert in_actor and not TrialJob.from_dict(job("ray_train", 1)).in_tune_actor
    assert trial_resources({"job": job("auto", 1)}) == {"cpu": 2, "gpu": 0}
    assert trial_resources({"job": job("auto", 2)})["cpu"] == 0


def test_a_trial_too_big_for_a_worker_is_refused_in_seconds_before_ray_starts(tmp_path: Path) -> None:
    """The plan's memory per worker against what a worker can get (this machine's memory, as Ray would
    report it): refused by name, estimate and limit, exit code 2, nothing started; --force skips the check."""
    import time

    from orchestrator.config import ConfigError
    from orchestrator.sweep.expand import expand
    from orchestrator.sweep.plan import check_memory, local_memory_limits, plan
    from orchestrator.sweep.runner import check_plan_fits
    from orchestrator.sweep.spec import load_spec

    model = {"d_model": 16384, "n_layers": 64, "n_heads": 128, "vocab_size": 50304, "context_length": 4096}
    spec = write_spec(
        tmp_path, "huge", tokens=4096 * 8, families=["transformer_pp"], widths=(16384, 12288), model=model
    )
    start = time.monotonic()
    result = cli("sweep", "run", str(spec), timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    assert "tpp-d16384-L64" in result.stderr and "per worker, over the" in result.stderr
    assert "TiB" in result.stderr and "node's memory" in result.stderr and "--force" in result.stderr
    # each trial on a line of its own, what to do about them said once
    over = [line for line in result.stderr.splitlines() if "per worker, over the" in line]
    assert len(over) == 2 and result.stderr.count("--force") == 1, result.stderr
    assert elapsed < 60, f"the refusal took {elapsed:.0f} s"
    sweep_dir = tmp_path / "out" / "huge"
    assert not (sweep_dir / "ray").exists() and not (sweep_dir / "sweep.json").exists()
    assert not (tmp_path / "out" / "mlflow.db").exists()

    planned = plan(expand(load_spec(spec)), calibrate=False)
    cpu_limit, _gpu = local_memory_limits()
    assert planned.max_memory_bytes > cpu_limit
    check_plan_fits(planned, force=True, on_cluster=False)  # --force: no refusal
    check_memory(planned, planned.max_memory_bytes, None)  # exactly at the limit: fits
    try:
        check_memory(planned, planned.max_memory_bytes - 1, None)
    except ConfigError as err:
        assert "tpp-d16384-L64" in str(err)
    else:
        raise AssertionError("one byte over the limit must be refused")


def test_the_live_progress_table_fits_80_columns_with_whole_headers(tmp_path: Path) -> None:
    """The sweep's live view at 80 columns: every header whole (it printed 'tria…', 'fini…'); an outcome's
    column appears once a trial has it."""
    import io

    from rich.console import Console

    from orchestrator.sweep.expand import expand
    from orchestrator.sweep.runner import progress_table, trial_units
    from orchestrator.sweep.spec import load_spec

    units = trial_units(expand(load_spec(write_spec(tmp_path, "live", tokens=2048))))

    def shown() -> str:
        console = Console(width=80, record=True, file=io.StringIO())
        console.print(progress_table("live", units, elapsed=10.0))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text, text
        return text

    text = shown()
    assert all(h in text for h in ("trials", "finished", "running", "pending", "work done", "ETA"))
    assert "failed" not in text
    units[0].folder.write_failed("RuntimeError: boom")
    assert "failed" in shown()
