"""One trial under DeepSpeed ZeRO, in this process or a local process group: the trainer (`trainer.py`:
budget, validation, exact resume, divergence, MLflow through `orchestrator.tracking`), verified checkpoints
(`checkpoint.py`), the wrapper that lets a second-order model train under ZeRO (`second_order.py`) and the
process group (`distributed.py`). Uses torch and DeepSpeed; knows nothing of Ray or sweeps."""
