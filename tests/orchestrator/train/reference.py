"""A plain-PyTorch reference trainer: the same model, data order, AdamW groups, schedule and clipping as
orchestrator/train/trainer.py, with no DeepSpeed. Parity tests compare DeepSpeed trajectories against it."""

from __future__ import annotations

import numpy as np
import torch

from model import build_model
from model.data import prepare_dataset
from orchestrator.config import TrialConfig
from orchestrator.train.trainer import SAMPLE_ID_SEED_SHIFT, lr_lambda, param_groups


def reference_losses(cfg: TrialConfig, steps: int) -> list[float]:
    data = prepare_dataset(cfg.data, cfg.model.context_length, quiet=True)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    o = cfg.optim
    opt = torch.optim.AdamW(param_groups(model, cfg), betas=(o.beta1, o.beta2), eps=o.eps)  # groups: lr, wd
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    G, m = cfg.train.global_batch_size, cfg.train.micro_batch_size
    losses = []
    for step in range(steps):
        indices = data.train_indices(step, G, cfg.train.seed)
        opt.zero_grad()
        micro = []
        for a in range(G // m):
            rows = np.arange(a * m, (a + 1) * m)
            x, y = data.windows("train", indices[rows])
            ids = torch.as_tensor((cfg.train.seed << SAMPLE_ID_SEED_SHIFT) + step * G + rows)
            step_seed = (cfg.train.seed << SAMPLE_ID_SEED_SHIFT) + step
            loss = model(x, y, sample_ids=ids, step_seed=step_seed)
            (loss / (G // m)).backward()
            micro.append(loss.item())
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(np.mean(micro)))
    return losses
