"""orchestrator/sweep/report.py: the report's claims table reaches the sweep's parent run in a real MLflow
store, as a table artifact and as metrics (so that the MLflow UI can compare studies by their claims)."""

from __future__ import annotations

import json
from pathlib import Path

from analysis.options import AnalysisOptions
from analysis.report import write_report
from orchestrator import tags
from orchestrator.sweep.report import CLAIMS_TABLE, publish_report
from orchestrator.tracking import get_or_create_experiment, mlflow_client
from tests.analysis.synthetic_scaling import make_split_thinking, make_trials


def test_the_claims_table_is_logged_to_the_parent_run_as_a_table_and_as_metrics(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    parent = client.create_run(get_or_create_experiment(uri, "study"), tags={tags.ROLE: tags.ROLE_SWEEP})
    trials = make_trials(axes=("data", "params"), n=6, noise=0.01).assign(vocab_size=512)
    thinking = make_split_thinking({"val": 0.05, "ood": 0.1})
    paths = write_report(trials, tmp_path / "report", {}, thinking, AnalysisOptions(bootstrap=50, seed=0))
    claims = json.loads(paths["summary"].read_text())["claims"]

    publish_report(uri, "study", paths)

    run_id = parent.info.run_id
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/summary.json", CLAIMS_TABLE} <= logged
    table = json.loads(
        Path(client.download_artifacts(run_id, CLAIMS_TABLE, str(tmp_path / "dl"))).read_text()
    )
    assert table["columns"][:3] == ["claim", "view", "paper"]
    assert len(table["data"]) == len(claims["records"]) == 2 * 3 + 2  # two axes x three views, System-2 x 2
    metrics = client.get_run(run_id).data.metrics
    assert metrics == claims["metrics"]
    assert metrics["claims.data.paper"] == 0.3598 and metrics["claims.data.x.word"] in (-1.0, 0.0, 1.0)
    assert {"claims.system2.val.relative", "claims.system2.ood.half_width"} <= set(metrics)
