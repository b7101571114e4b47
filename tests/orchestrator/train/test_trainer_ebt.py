"""The EBT under real DeepSpeed ZeRO engines: its second-order inner loop trains on every stage with the same
trajectory as plain PyTorch (orchestrator/train/second_order.py), on 1 and 2 processes, and resumes
exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import build_model
from orchestrator.train.second_order import SecondOrderSafe
from orchestrator.train.trainer import Trial, TrialResult, launch_trial, lr_lambda, train_trial
from tests.helpers import in_folder, tiny_trial
from tests.orchestrator.train.reference import reference_losses

STEPS = 20


def ebt_trial(out: Path, **sections):
    """A tiny EBT trial. Step size 50, not the System-1 default 500 (the authors' value for a 50k
    vocabulary): at vocabulary 320, alpha 500 makes first losses of ~400 nats and a chaotic trajectory in
    which fp32 reduction order alone (2 processes vs 1) moves losses by 1e-5 relative within 20 steps."""
    train = {"tokens": 8 * 32 * STEPS, "eval_every": 10, "checkpoint_every": 10, **sections.pop("train", {})}
    model = {"ebt": {"step_size": 50.0}, **sections.pop("model", {})}
    return tiny_trial(out, family="ebt", model=model, train=train, **sections)


@pytest.fixture(scope="module")
def reference() -> list[float]:
    """Plain PyTorch's losses for ebt_trial (the ZeRO stage plays no part in them)."""
    return reference_losses(ebt_trial(Path("unused")), STEPS)


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory: pytest.TempPathFactory) -> TrialResult:
    """ebt_trial as it is (ZeRO-1), trained uninterrupted: the parity test's stage 1 and the resume test's
    reference run."""
    out = tmp_path_factory.mktemp("ebt-stage-one")
    return train_trial(in_folder(ebt_trial(out), out / "t"), progress=False)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_ebt_zero_stage_matches_plain_pytorch(
    tmp_path: Path, stage: int, reference: list[float], stage_one: TrialResult
) -> None:
    cfg = ebt_trial(tmp_path, deepspeed={"zero_stage": stage})
    assert cfg.deepspeed.zero_stage == stage
    result = stage_one if stage == 1 else train_trial(in_folder(cfg, tmp_path / "trial"), progress=False)
    assert result.status == "finished" and result.steps == STEPS
    assert result.losses == pytest.approx(reference, abs=1e-5)
    assert result.losses[-1] < 0.7 * result.losses[0]  # it learns through the optimisation
    # ZeRO-3 left torch's linear in place (DeepSpeed's memory_efficient_linear would replace it for the whole
    # process with one that also computes weight gradients inside the candidate gradient)
    assert torch.nn.functional.linear is torch._C._nn.linear


def test_ebt_two_processes_match_one(tmp_path: Path) -> None:
    cfg1 = ebt_trial(tmp_path / "one", train={"micro_batch_size": 8})
    one = train_trial(in_folder(cfg1, tmp_path / "one/t"), progress=False)
    cfg2 = ebt_trial(tmp_path / "two", resources={"num_workers": 2}, deepspeed={"zero_stage": 3})
    two = launch_trial(cfg2, progress=False)
    assert two.status == "finished"
    assert two.losses == pytest.approx(one.losses, abs=1e-5)
    assert two.final_val_loss == pytest.approx(one.final_val_loss, abs=1e-5)


def test_ebt_resume_equals_uninterrupted(tmp_path: Path, stage_one: TrialResult) -> None:
    full = stage_one  # ebt_trial uninterrupted
    cfg = ebt_trial(tmp_path / "resumed", deepspeed={"zero_stage": 2})
    first = train_trial(in_folder(cfg, tmp_path / "resumed/t"), progress=False, stop_after_steps=10)
    second = train_trial(in_folder(cfg, tmp_path / "resumed/t"), progress=False)
    assert first.steps == 10 and second.status == "finished"
    assert first.losses + second.losses == pytest.approx(full.losses, abs=1e-6)
    assert second.final_val_loss == pytest.approx(full.final_val_loss, abs=1e-6)


@pytest.mark.parametrize("stage", [0, 1])
def test_the_engines_adamw_trains_each_group_at_the_configs_lr_and_weight_decay(
    tmp_path: Path, stage: int
) -> None:
    """What the engine's AdamW holds, not what the DeepSpeed config says: base lr with weight decay on the
    matrices, base lr without on the rest, lr x the step size's multiplier without on alpha (weight decay
    0.05, not torch's default 0.01, and lr 2e-3, not its 1e-3, so a group left to the defaults shows).
    Stage 0: the engine's optimizer is torch's over the model's own parameters, so alpha is seen in its
    group. On CPU, precision auto trains in fp32 (TrialConfig.precision)."""
    optim = {"lr": 2e-3, "weight_decay": 0.05}
    cfg = ebt_trial(tmp_path, optim=optim, deepspeed={"zero_stage": stage, "precision": "auto"})
    trial = Trial(in_folder(cfg, tmp_path / "t"), None, progress=False)
    groups = trial.engine.optimizer.param_groups
    alpha_lr = 2e-3 * cfg.model.ebt.step_size_lr_multiplier
    assert [(g["initial_lr"], g["weight_decay"]) for g in groups] == [
        (2e-3, 0.05),
        (2e-3, 0.0),
        (alpha_lr, 0.0),
    ]
    assert [g["lr"] for g in groups] == [g["initial_lr"] * lr_lambda(cfg)(0) for g in groups]  # the schedule
    o = cfg.optim  # what every group shares comes from DeepSpeed's optimizer block
    assert {(tuple(g["betas"]), g["eps"], g["fused"]) for g in groups} == {((o.beta1, o.beta2), o.eps, True)}
    if stage == 0:
        (alpha,) = groups[2]["params"]
        assert alpha is dict(trial.model.named_parameters())["alpha"]
    assert trial.accelerator == "cpu" and not trial.engine.bfloat16_enabled()


@pytest.mark.parametrize(("family", "tied"), [("ebt", False), ("transformer_pp", True)])
def test_second_order_wrapper_gives_plain_autograd_gradients(tmp_path: Path, family: str, tied: bool) -> None:
    """The wrapper alone (no DeepSpeed): gradients equal the unwrapped model's; tied weights stay tied."""
    cfg = tiny_trial(tmp_path, family=family, model={"tie_embeddings": tied})
    torch.manual_seed(0)
    plain = build_model(cfg.model)
    torch.manual_seed(0)
    wrapped = SecondOrderSafe(build_model(cfg.model))
    tokens = torch.randint(0, cfg.model.vocab_size, (2, 16))
    targets = torch.randint(0, cfg.model.vocab_size, (2, 16))
    ids = torch.arange(2)
    plain(tokens, targets, sample_ids=ids).backward()
    wrapped(tokens, targets, sample_ids=ids).backward()
    grads = dict(plain.named_parameters())
    for name, p in wrapped.model.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-7)
    # every parameter is owned by exactly one holder (a tied one only once)
    assert sum(len(dict(h.named_parameters())) for h in wrapped.holders.values()) == len(grads)


@pytest.mark.slow
def test_tiny_ebt_learns_the_corpus(tmp_path: Path) -> None:
    """The EBT learns real text: the demo's model size (d 32, 1 layer, context 64, BPE 512) on the embedded
    corpus, 96K tokens, ends well below a uniform guess over the vocabulary (ln 512 = 6.24). Measured
    2026-11-28: 4.86 nats. An EBT that descends on the logits instead of the probabilities stayed at
    6.35-6.45 at any step size (the bug this guards against)."""
    import math

    cfg = tiny_trial(
        tmp_path,
        family="ebt",
        model={"d_model": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 512, "context_length": 64},
        data={"vocab_size": 512, "max_documents": None},
        optim={"lr": 3e-3, "warmup_fraction": 0.1},
        train={
            "tokens": 96_000,
            "global_batch_size": 8,
            "micro_batch_size": 8,
            "eval_every": 200,
            "eval_batches": 4,
            "checkpoint_every": 1000,
        },
    )
    result = train_trial(in_folder(cfg, tmp_path / "trial"), progress=False)
    assert result.status == "finished" and result.final_val_loss is not None
    assert result.final_val_loss <= math.log(512) - 1.0


def test_system2_recipe_with_replay_trains_under_zero(tmp_path: Path) -> None:
    """The System-2 recipe (no detach, truncate, Langevin, random alpha and K, replay buffer) through the
    trainer on ZeRO-2: the buffer lives in the wrapped model across steps (the first step, with an empty
    buffer, equals a run without one; later steps replay and differ) and the trial finishes."""
    from model.ebt import system2_recipe

    losses = {}
    for size in (16, 0):
        recipe = system2_recipe(step_size=20.0, replay_buffer_size=size).model_dump()
        cfg = ebt_trial(
            tmp_path / str(size),
            model={"ebt": recipe},
            deepspeed={"zero_stage": 2},
            train={"tokens": 8 * 32 * 4, "micro_batch_size": 8},  # one micro-batch a step
        )
        result = train_trial(in_folder(cfg, tmp_path / f"{size}/trial"), progress=False)
        assert result.status == "finished" and result.steps == 4
        losses[size] = result.losses
    assert all(torch.isfinite(torch.tensor(losses[16])))
    assert losses[16][0] == pytest.approx(losses[0][0], abs=1e-6)
    assert losses[16][1:] != pytest.approx(losses[0][1:], abs=1e-4)
