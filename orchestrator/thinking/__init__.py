"""System-2 thinking of trained EBTs, which is not a sweep: load a finished trial's weights, run the curves of
model/thinking.py (more energy-minimisation steps, self-verification) on validation and out-of-distribution
text, and log them to MLflow where the report finds them (`evaluate.py`; `ebtscale think`). Imports torch.
It resolves a sweep spec to its trials through `sweep/`, so it ranks above it (cli -> cluster, thinking ->
sweep)."""
