"""`model.kernels` under the real DeepSpeed engine: the trainer builds the model with its kernels resolved
(TrialConfig.kernels), and with torch.compile and the chunked CE on, both families train the trajectory of
the plain eager model under ZeRO (the EBT through SecondOrderSafe's weight clones, the Transformer++'s head
under ZeRO-3's parameter gathering)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo.utils

import model.kernels
from model.config import KernelsConfig
from model.ebt import EBT
from model.transformer_pp import TransformerPP
from orchestrator.train.trainer import train_trial
from tests.helpers import in_folder, tiny_trial
from tests.orchestrator.train.reference import reference_losses

STEPS = 12
ON = {"compile": True, "chunked_ce": True, "ce_chunk_rows": 40}  # chunks that split the 4 x 32 positions


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile with the aot_eager backend: dynamo's capture and AOTAutograd's compiled forward and
    backward (what meets DeepSpeed's hooks and the clones), without inductor's code generation, whose numbers
    tests/model/test_kernels.py checks (seconds here instead of minutes)."""
    monkeypatch.setattr(model.kernels, "_COMPILED", {})
    monkeypatch.setitem(model.kernels.COMPILE_OPTIONS, "backend", "aot_eager")


@pytest.mark.parametrize(
    ("family", "stage", "kernels", "compiled_part"),
    [
        ("ebt", 3, ON, (EBT, "observed_stream")),  # the compiled stream on SecondOrderSafe's clones
        ("transformer_pp", 1, ON, (TransformerPP, "features")),
        ("transformer_pp", 3, ON | {"compile": False}, None),  # the chunked CE's head under ZeRO-3
    ],
    ids=["ebt-zero3", "tpp-zero1", "tpp-zero3-chunked-ce"],
)
def test_compile_and_the_chunked_ce_train_the_eager_trajectory(
    tmp_path: Path, aot_eager: None, family: str, stage: int, kernels: dict, compiled_part: tuple | None
) -> None:
    model_section = {"kernels": kernels} | ({"ebt": {"step_size": 50.0}} if family == "ebt" else {})
    cfg = tiny_trial(
        tmp_path,
        family=family,
        model=model_section,
        deepspeed={"zero_stage": stage},
        train={"eval_every": 12},
    )
    eager = cfg.model_copy(update={"model": cfg.model.model_copy(update={"kernels": KernelsConfig()})})
    want = reference_losses(eager, STEPS)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    result = train_trial(in_folder(cfg, tmp_path / "trial"), progress=False)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
    assert list(model.kernels._COMPILED) == ([compiled_part] if compiled_part else [])
    # one graph for training, one for evaluation (no grad), and no recompiles step after step
    assert graphs == (2 if compiled_part else 0)
    assert result.status == "finished" and result.steps == STEPS
    assert result.losses == pytest.approx(want, abs=1e-4)
    assert result.losses[-1] < result.losses[0] - 0.3  # it learns
