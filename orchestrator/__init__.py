"""The orchestrator: from a trial config or a sweep spec to trained, tracked trials. Five parts, whose
imports run one way (cli -> cluster, thinking -> sweep -> train -> the shared modules here -> model/):

- `train/`: one trial under DeepSpeed ZeRO (trainer, checkpoints, the second-order wrapper, the process
  group). Knows nothing of Ray.
- `sweep/`: a study: specs, the dry-run plan, the Ray Tune runner, results, the report's MLflow side.
- `thinking/`: System-2 thinking of trained EBTs (`ebtscale think`), which reads a sweep but is not one.
- `cluster/`: submitting a sweep's driver to a Ray cluster as a Ray Job.
- `cli/`: every `ebtscale` command, thin: parse, call one library function, print.

Shared by all, torch-free: `config` (typed trial configs), `trial_dir` (a trial's folder and its status
vocabulary), `tracking` (MLflow runs and clients), `tags` (MLflow tag names), `ports`.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout, or site-packages when installed
