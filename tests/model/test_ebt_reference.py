"""The EBT against a plain, loop-by-loop reference of the method (docs/ebt.md, "The descent"), in float64.

The reference below is written from the method's text, not from model/ebt.py: its own energy network (the
attention pattern built cell by cell, its own rotary, RMSNorm and SwiGLU, full recompute of the whole
[step token | observed | candidates] sequence at every step) reading the model's parameter tensors, and its
own descent, in the authors' form: p = softmax(ŷ), g = ∂E/∂p, ŷ ← p − α·g. Only the random draws come from
the model's per-row generators (`Noise`, same seeds, same order), so that both see the same noise.

A descent taken on the logits instead (ŷ − α·∂E/∂ŷ, this project's earlier bug) differs from the
reference at the first step by a relative ~1: these tests fail on it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from model.config import EBTConfig, ModelConfig
from model.ebt import EBT, Noise, _mix, system2_recipe

V, S, B = 11, 6, 3

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_energy(model: EBT, tokens: Tensor, probs: Tensor, step: int) -> Tensor:
    """Energies (B, S) of candidate probabilities (B, S, V), computed over the whole sequence."""
    cfg, e = model.cfg, model.cfg.ebt
    W = dict(model.named_parameters())
    H, hd = cfg.n_heads, cfg.head_dim
    P = 1 if e.variant == "time_embed" else 0
    n_batch = tokens.shape[0]

    observed = W["embed.weight"][tokens]  # (B, S, d)
    cand_map = W["embed.weight"] if cfg.tie_embeddings else W["cand_embed.weight"].T  # (V, d)
    candidates = probs @ cand_map  # (B, S, d)
    rows = [observed, candidates]
    if P:
        index = min(step, e.mcmc_steps - 1)  # steps past the trained count keep the last landscape
        rows.insert(0, W["step_embed.weight"][index].expand(n_batch, 1, -1))
    h = torch.cat(rows, dim=1)  # (B, T, d), T = P + 2S
    T = h.shape[1]

    # who may attend to whom, cell by cell (docs/ebt.md, "Attention pattern")
    def is_observed(i: int) -> bool:
        return i < P + S

    allowed = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            if is_observed(i):
                allowed[i, j] = j <= i  # step token + observed: causal, never a candidate
            else:
                t = i - (P + S)  # candidate t predicts observed token t+1
                allowed[i, j] = j < P or (P <= j <= P + t) or j == i
    # positions: step token 0, observed token i at P+i, candidate t at the position of token t+1
    pos = torch.tensor([float(i) for i in range(P + S)] + [float(P + t + 1) for t in range(S)], dtype=h.dtype)

    def rms(x: Tensor, w: Tensor) -> Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps) * w

    def rotate(x: Tensor) -> Tensor:  # x (B, T, H, hd): pairs (i, i + hd/2) rotated by pos * theta^(-2i/hd)
        half = hd // 2
        freq = cfg.rope_theta ** (-torch.arange(half, dtype=h.dtype) * 2 / hd)
        ang = pos[:, None] * freq[None, :]  # (T, half)
        c, s = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * c - b * s, a * s + b * c], dim=-1)

    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        x = rms(h, W[p + "attn_norm.weight"])
        q, k, v = (x @ W[p + "attn.qkv.weight"].T).view(n_batch, T, 3, H, hd).unbind(2)
        q, k = rotate(q), rotate(k)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        scores = scores.masked_fill(~allowed, float("-inf"))
        att = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(n_batch, T, H * hd)
        h = h + att @ W[p + "attn.proj.weight"].T
        x = rms(h, W[p + "mlp_norm.weight"])
        gate, up = x @ W[p + "mlp.gate.weight"].T, x @ W[p + "mlp.up.weight"].T
        h = h + (F.silu(gate) * up) @ W[p + "mlp.down.weight"].T
    out = rms(h, W["norm.weight"])[:, P + S :]  # candidate rows
    return (out @ W["energy_head.weight"].T).squeeze(-1)


def reference_descent(
    model: EBT, tokens: Tensor, sample_ids: Tensor, step_seed: int, *, learning: bool
) -> list[Tensor]:
    """The candidates ŷ_1..ŷ_K (B, S, V) after each step of one training (learning=True) forward."""
    e = model.cfg.ebt
    noise = Noise(tokens.shape[0], tokens.device, [_mix(i, step_seed) for i in sample_ids.tolist()])
    K = len(model.train_steps(step_seed))  # the batch's step-count draw
    y = (noise.randn(S, V) * e.candidate_init_std).double()  # draw 1: initial candidate (logits)
    alpha = model.alpha.clamp(min=e.step_size_min)
    if e.step_size_random_scale != 1.0:  # draw 2: per-position alpha in [alpha/s, alpha*s]
        s = e.step_size_random_scale
        alpha = alpha * (1 / s + (s - 1 / s) * noise.rand(S, 1).double())
    out = []
    for k in range(K):
        if e.detach_between_steps or k == 0:
            y = y.detach().requires_grad_()
        if e.langevin_noise_std > 0:  # draws 3..: Langevin noise on the logits
            y = y + e.langevin_noise_std * noise.randn(S, V).double()
        p = torch.softmax(y, dim=-1)
        energy = reference_energy(model, tokens, p, step=k)
        keep = learning and (not e.truncate_to_last_step or k == K - 1)
        (g,) = torch.autograd.grad(energy.sum(), p, create_graph=keep)  # w.r.t. the probabilities
        y = p - alpha * g  # read as logits by the next softmax and by this step's prediction
        out.append(y)
    return out


def reference_loss(model: EBT, tokens: Tensor, targets: Tensor, ids: Tensor, step_seed: int) -> Tensor:
    e = model.cfg.ebt
    steps = reference_descent(model, tokens, ids, step_seed, learning=True)
    kept = steps[-1:] if e.truncate_to_last_step else steps
    return sum(F.cross_entropy(y.flatten(0, 1), targets.flatten()) for y in kept) / len(kept)


RECIPES = {
    "S1": EBTConfig(step_size=30.0),  # K=2, detached, alpha learnable (its multiplier is the trainer's)
    # no detach + truncate + Langevin + random alpha and K; its replay buffer is tested on its own
    "S2": system2_recipe(mcmc_steps=2, mcmc_steps_random_max=4, step_size=20.0, replay_buffer_size=0),
}


def build(recipe: str, variant: str, reuse: bool) -> EBT:
    cfg = ModelConfig(
        family="ebt",
        d_model=16,
        n_layers=2,
        n_heads=2,
        vocab_size=V,
        context_length=S,
        ebt=RECIPES[recipe].model_copy(update={"variant": variant, "reuse_observed_kv": reuse}),
    )
    torch.manual_seed(0)
    model = EBT(cfg).double()
    with torch.no_grad():  # energies of a freshly initialised model are nearly flat: give them structure
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
    return model


def data() -> tuple[Tensor, Tensor, Tensor]:
    seq = torch.randint(0, V, (B, S + 1), generator=torch.Generator().manual_seed(4))
    return seq[:, :-1], seq[:, 1:], torch.arange(10, 10 + B)


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-300))


@pytest.mark.parametrize("reuse", [False, True], ids=["full", "reuse_kv"])
@pytest.mark.parametrize("variant", ["time_embed", "default"])
@pytest.mark.parametrize("recipe", ["S1", "S2"])
def test_ebt_matches_the_reference(recipe: str, variant: str, reuse: bool) -> None:
    model = build(recipe, variant, reuse)
    tokens, targets, ids = data()
    step_seed = 3
    params = [p for _, p in model.named_parameters()]

    # per-step predictions, with the graph kept as in training
    expected = reference_descent(model, tokens, ids, step_seed, learning=True)
    noise = Noise(B, tokens.device, [_mix(i, step_seed) for i in ids.tolist()])
    steps = model.train_steps(step_seed)
    candidate = model.initial_candidate(tokens, noise)
    got = [
        c
        for c, _ in model.descend(
            tokens,
            candidate,
            steps,
            noise,
            create_graph=True,
            alpha=model.step_size(tokens, noise),
            langevin_std=model.cfg.ebt.langevin_noise_std,
        )
    ]
    assert len(got) == len(expected) >= 2
    for k, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert rel(a, b) < 1e-9, f"step {k}: {rel(a, b):.3g}"
        assert rel(b - candidate, candidate) > 1e-3  # the descent moves the candidate: not a vacuous match

    # the training loss and every parameter gradient (second order through the descent)
    loss = model(tokens, targets, sample_ids=ids, step_seed=step_seed)
    ref = reference_loss(model, tokens, targets, ids, step_seed)
    assert abs(float(loss) - float(ref)) <= 1e-9 * abs(float(ref))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    names = [n for n, _ in model.named_parameters()]
    for name, g, r in zip(names, grads, ref_grads, strict=True):
        assert (g is None) == (r is None), name
        if r is not None and r.abs().max() > 0:
            assert rel(g, r) < 1e-9, f"{name}: {rel(g, r):.3g}"
    assert ref_grads[names.index("energy_head.weight")].abs().max() > 1e-8  # second-order terms are there


def test_inference_matches_the_reference() -> None:
    """`think` (no graph, fixed evaluation noise, the trained step count): each step's CE equals the
    reference descent's, on the System-1 recipe."""
    model = build("S1", "time_embed", reuse=True)
    tokens, targets, ids = data()
    thought = model.think(tokens, targets, steps=4, sample_ids=ids)
    # think draws from the evaluation stream: reproduce it with the same seeds
    from model.ebt import _EVAL_SALT

    noise = Noise(B, tokens.device, [_mix(i, _EVAL_SALT, 0) for i in ids.tolist()])
    y = noise.randn(S, V).double()
    alpha = model.alpha.clamp(min=model.cfg.ebt.step_size_min)
    for k in range(4):
        p = torch.softmax(y.detach(), -1).requires_grad_()
        (g,) = torch.autograd.grad(reference_energy(model, tokens, p, step=k).sum(), p)
        y = p - alpha * g
        ce = F.cross_entropy(y.flatten(0, 1), targets.flatten())
        assert abs(float(thought.ce[k]) - float(ce)) <= 1e-9 * float(ce), k
