"""MLflow names: every tag ebtscale writes or searches by, and the artifacts it reads back, named once.

The sweep driver creates runs with them, the trainer updates them, `results` reads them back and the tests
query by them; a renamed tag changes here only.
"""

from __future__ import annotations

PREFIX = "ebtscale."
PARENT = "mlflow.parentRunId"  # MLflow's own: a trial's run is a child of its sweep's run

ROLE = f"{PREFIX}role"  # "sweep" on a sweep's parent run
SWEEP = f"{PREFIX}sweep"
TRIAL_ID = f"{PREFIX}trial_id"
FAMILY = f"{PREFIX}family"
AXIS = f"{PREFIX}axis"
STATUS = f"{PREFIX}status"  # a TrialStatus value
STATUS_REASON = f"{PREFIX}status_reason"
ROWS = f"{PREFIX}rows"  # JSON: every plan row (axis membership) a trial's run stands for
STAGE = f"{PREFIX}stage"  # "tuning" on a tuning-stage trial's run (orchestrator/sweep/tuning.py)

EXTEND_ROUND = f"{PREFIX}extend_round"  # on a trial's run that `sweep extend` added: its round
EXTEND_STOP = f"{PREFIX}extend_stop"  # on the sweep's parent run: why `sweep extend` stopped

ROLE_SWEEP = "sweep"
STAGE_TUNING = "tuning"

# MLflow's own experiment tag: the UI opens an experiment with it in the model-training view, not GenAI's
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

THINKING_ARTIFACT = "thinking.json"  # System-2 curves, on the EBT trial's run and the sweep's parent run
EXTEND_ARTIFACT_DIR = "extend"  # on the sweep's parent run: round-<n>.json, each round of `sweep extend`
ERROR_ARTIFACT = "error/traceback.txt"  # on a failed trial's run: what its last attempt raised


def search(tag: str, value: str) -> str:
    """An MLflow search-filter clause: the tag equals the value."""
    return f"tags.`{tag}` = '{value}'"
