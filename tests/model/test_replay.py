"""The EBT's System-2 replay buffer (model/replay.py): what it keeps, what a training batch replays, and that
replayed rows restart their descent from the stored candidate."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from model.config import ModelConfig
from model.ebt import EBT, Noise, _mix, system2_recipe
from model.replay import ReplayBuffer
from tests.helpers import token_batch

V, S, B = 12, 6, 4

pytestmark = pytest.mark.usefixtures("one_thread")


def test_buffer_keeps_the_latest_and_samples_a_fraction() -> None:
    buf = ReplayBuffer(size=5, fraction=0.5)
    assert buf.sample(4, seed=1) == []  # empty: nothing to replay
    for start in (0, 3, 6):  # 9 rows added, the oldest 4 dropped
        tokens = torch.arange(start, start + 3)[:, None].expand(3, S)
        buf.add(tokens, tokens, torch.zeros(3, S, V), keys=[start, start + 1, start + 2])
    assert len(buf) == 5 and [r.key for r in buf.records] == [4, 5, 6, 7, 8]
    drawn = buf.sample(5, seed=7)  # floor(0.5 * 5) = 2, without replacement
    assert len(drawn) == 2 and len({r.key for r in drawn}) == 2
    assert [r.key for r in buf.sample(5, seed=7)] == [r.key for r in drawn]  # seeded: reproducible
    assert {tuple(r.key for r in buf.sample(5, seed=s)) for s in range(20)} != {tuple(r.key for r in drawn)}
    assert len(buf.sample(40, seed=0)) == 5  # never more than it holds


def model(replay: int = 4) -> EBT:
    cfg = ModelConfig(
        family="ebt",
        d_model=16,
        n_layers=1,
        n_heads=2,
        vocab_size=V,
        context_length=S,
        ebt=system2_recipe(replay_buffer_size=replay, step_size=20.0),
    )
    torch.manual_seed(0)
    return EBT(cfg)


batch = partial(token_batch, B, vocab=V, length=S)  # batch(seed): B random sequences


def test_replayed_rows_restart_from_their_stored_candidate() -> None:
    ebt = model()
    x1, y1 = batch(1)
    ebt(x1, y1, sample_ids=torch.arange(B), step_seed=0)  # fills the buffer: nothing to replay yet
    assert len(ebt.replay) == B
    stored = {r.key: r for r in ebt.replay.records}

    x2, y2 = batch(2)
    ids, step_seed = torch.arange(100, 100 + B), 1
    replayed = ebt.replay.sample(B, _mix(100, step_seed, 0x4E91_A7B0))  # the draw forward makes
    assert len(replayed) == B // 2
    loss = ebt(x2, y2, sample_ids=ids, step_seed=step_seed)
    assert len(ebt.replay) == B  # the fresh rows replaced the oldest; replayed rows are not added again
    assert {r.key for r in ebt.replay.records} == set(ids.tolist())

    # the same loss from the descent started by hand: fresh rows from noise, replayed rows from their store
    tokens = torch.cat([x2, torch.stack([r.tokens for r in replayed])])
    targets = torch.cat([y2, torch.stack([r.targets for r in replayed])])
    keys = ids.tolist() + [r.key for r in replayed]
    assert all(torch.equal(stored[r.key].tokens, x1[r.key]) for r in replayed)

    def descent_loss(start_from_store: bool) -> torch.Tensor:
        noise = Noise(len(keys), tokens.device, [_mix(k, step_seed) for k in keys])
        candidate = ebt.initial_candidate(tokens, noise)
        if start_from_store:
            candidate = torch.cat([candidate[:B], torch.stack([r.candidate for r in replayed])])
        steps = ebt.train_steps(step_seed)
        alpha = ebt.step_size(tokens, noise)
        descent = ebt.descend(
            tokens, candidate, steps, noise, create_graph=True, alpha=alpha, langevin_std=3.0
        )
        *_, (final, _) = descent  # truncated: the last step's CE is the loss
        return F.cross_entropy(final.flatten(0, 1), targets.flatten())

    torch.testing.assert_close(loss, descent_loss(True), rtol=1e-6, atol=1e-6)
    assert abs(float(loss) - float(descent_loss(False))) > 1e-4  # the store matters: 100x the match's bound


def test_evaluation_neither_replays_nor_stores() -> None:
    ebt = model()
    x, y = batch(1)
    with torch.no_grad():
        ebt(x, y, sample_ids=torch.arange(B), step_seed=0)
    ebt.eval_loss(x, y)
    assert len(ebt.replay) == 0
    ebt.eval()
    ebt(x, y, sample_ids=torch.arange(B), step_seed=0)  # eval mode, grad enabled
    assert len(ebt.replay) == 0
    ebt.train()
    ebt(x, y, sample_ids=torch.arange(B), step_seed=0)
    assert len(ebt.replay) == B
    assert model(replay=0).replay is None


def test_replayed_rows_are_counted_in_the_flops() -> None:
    """Once the buffer holds enough, a training forward runs B + B/2 rows: the FLOP counts say 1.5x."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from model.flops import ebt_reuse_train_flops_per_token

    recipe = system2_recipe(mcmc_steps=2, mcmc_steps_random_min=None, mcmc_steps_random_max=None)
    cfg = ModelConfig(
        family="ebt", d_model=32, n_layers=2, n_heads=2, vocab_size=64, context_length=S, ebt=recipe
    )
    ebt = EBT(cfg)
    x, y = batch(3)
    ebt(x, y).backward()  # fills the buffer
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        ebt(x, y).backward()
    assert abs(counter.get_total_flops() / (ebt_reuse_train_flops_per_token(cfg) * x.numel()) - 1) < 0.05
