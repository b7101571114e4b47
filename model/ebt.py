"""The autoregressive Energy-Based Transformer (Gladstone et al. 2025), as defined in docs/ebt.md.

An EBT learns a scalar energy E(context, candidate) per position and predicts the next token by gradient
descent on the candidate, starting from noise: each step normalises the candidate logits ŷ to probabilities
p, takes g = ∂E/∂p and steps to ŷ ← p − α·g (docs/ebt.md §0). Training backpropagates the cross-entropy of
every step's prediction *through* the descent, so it needs second-order gradients.

Shapes: B batch, S observed tokens, V vocabulary, d width, P = 1 step token ("time_embed") or 0 ("default").
One energy evaluation runs a sequence of P + 2S rows, ordered [step token | observed x_0..x_{S-1} | candidates
c_0..c_{S-1}], where candidate c_t is the model's guess of the next token tokens[t+1] = targets[t].

Constraints from the distributed trainer (DeepSpeed ZeRO): the whole descent happens inside forward/eval_loss/
think, candidate gradients come only from `torch.autograd.grad(E.sum(), candidate)`, nothing derived from the
parameters is cached across calls, and the module works under `torch.func.functional_call`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from model.blocks import Block, RMSNorm, init_weights, rotary_cos_sin, table_dtype
from model.config import EBTConfig, ModelConfig
from model.flops import candidate_blocks, tied_candidate_map
from model.kernels import compiled
from model.loss import ce_chunk_rows, training_ce
from model.replay import ReplayBuffer


class NonFiniteEnergyGradient(FloatingPointError):
    """A NaN/Inf gradient of the energy w.r.t. the candidate: an error, as in the authors' code."""


def system2_recipe(**overrides: object) -> EBTConfig:
    """The authors' System-2 recipe (docs/ebt.md, "Recipes"): one landscape descended K ∈ {2, 3} times,
    alpha 5 fixed and randomised per position, Langevin noise, no detach, truncated, replay buffer."""
    recipe: dict[str, object] = dict(
        mcmc_steps=1,
        mcmc_steps_random_min=2,
        mcmc_steps_random_max=3,
        step_size=5.0,
        step_size_learnable=False,
        step_size_random_scale=2.0,
        langevin_noise_std=3.0,
        detach_between_steps=False,
        truncate_to_last_step=True,
        replay_buffer_size=192,
        replay_fraction=0.5,
    )
    return EBTConfig(**{**recipe, **overrides})


# ----------------------------------------------------------------------------------------------------------
# Randomness. Every per-row draw comes from a generator seeded by that row's key (its sample id), so a row
# gets the same noise however a global batch is split across processes and micro-batches.

_EVAL_SALT = 0x5EED_E7A1  # evaluation/thinking noise: fixed, independent of the training stream
_REPLAY_SALT = 0x4E91_A7B0  # which stored sequences a micro-batch replays


def _mix(*values: int) -> int:
    """Deterministic 63-bit hash of a few integers (splitmix64 steps), used as a generator seed."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return h >> 1


class Noise:
    """The source of every random draw of one call: one generator per row, or the global RNG (seeds=None)."""

    def __init__(self, batch: int, device: torch.device, seeds: Sequence[int] | None) -> None:
        self.batch, self.device = batch, device
        self.generators = None if seeds is None else [torch.Generator(device).manual_seed(s) for s in seeds]

    def _draw(self, fill: Callable[..., Tensor], shape: tuple[int, ...]) -> Tensor:
        """(B, *shape) float32 filled in place, row by row from its generator (the same values as
        torch.randn/rand(shape, generator=g), without a stacked copy: a row can be S x V)."""
        out = torch.empty(self.batch, *shape, device=self.device)
        if self.generators is None:
            return fill(out)
        for row, g in zip(out, self.generators, strict=True):
            fill(row, generator=g)
        return out

    def randn(self, *shape: int) -> Tensor:
        """(B, *shape) standard normal, float32."""
        return self._draw(Tensor.normal_, shape)

    def rand(self, *shape: int) -> Tensor:
        """(B, *shape) uniform in [0, 1), float32."""
        return self._draw(Tensor.uniform_, shape)


# ----------------------------------------------------------------------------------------------------------
# Layout of one energy evaluation: attention pattern and rotary positions (docs/ebt.md §1).


def candidate_mask(S: int, P: int, device: torch.device | None = None) -> Tensor:
    """Boolean (S, P+S+S) 'may attend' rows of the candidates over [step token | observed | candidates]:
    candidate t sees the step token, observed tokens 0..t (never its target tokens[t+1]), and itself only."""
    t = torch.arange(S, device=device)[:, None]
    j = torch.arange(P + S, device=device)[None, :]
    sees_observed = j <= t + P  # key j < P is the step token, key P+i is observed token i
    sees_itself = torch.eye(S, dtype=torch.bool, device=device)
    return torch.cat([sees_observed, sees_itself], dim=1)


def observed_bias(S: int, P: int, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """The observed columns of `candidate_mask` as an additive score bias (S, P+S): 0 where candidate t may
    attend (step token, observed tokens 0..t), -inf elsewhere; each candidate also sees itself (apart)."""
    bias = torch.zeros(S, P + S, dtype=dtype, device=device)
    return bias.masked_fill(~candidate_mask(S, P, device)[:, : P + S], float("-inf"))


def full_mask(S: int, P: int, device: torch.device | None = None) -> Tensor:
    """Boolean (P+2S, P+2S) mask of the whole sequence: step token + observed stream causal among themselves
    (they never see candidates), then the candidate rows above."""
    n = P + S
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    observed_rows = torch.cat([causal, torch.zeros(n, S, dtype=torch.bool, device=device)], dim=1)
    return torch.cat([observed_rows, candidate_mask(S, P, device)], dim=0)


def positions(S: int, P: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Rotary positions (P+S,), (S,): step token at 0, observed token i at P+i, and candidate t at the
    position of the token it predicts, tokens[t+1], i.e. P+t+1."""
    observed = torch.arange(P + S, device=device)
    return observed, observed[P:] + 1


# ----------------------------------------------------------------------------------------------------------


@dataclass
class Thought:
    """What `EBT.think` returns. M candidates per position; energies are those of each step's evaluation."""

    ce: Tensor  # (steps,) mean next-token CE of the selected candidate after each step
    energies: Tensor  # (steps, M, B, S) energy at the input of each step
    logits: Tensor  # (B, S, V) final selected candidate (unnormalised logits)
    choice: Tensor  # (B, S) index of the selected candidate (lowest energy at the last evaluation)
    all_logits: Tensor | None = None  # (M, B, S, V) every candidate's final logits, if asked for
    row_nll: Tensor | None = None  # (steps, B) summed next-token NLL per row after each step (ignored: 0)


class EBT(nn.Module):
    """Energy-Based Transformer with the uniform model interface of the trainer (see model/__init__.py)."""

    second_order = True  # its loss differentiates through its own gradients (the trainer wraps it for ZeRO)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg, e = cfg, cfg.ebt
        d, V = cfg.d_model, cfg.vocab_size
        self.P = e.n_step_tokens
        self.n_step_embeddings = e.mcmc_steps  # steps beyond these reuse the last index ("final landscape")
        self.embed = nn.Embedding(V, d)  # observed tokens
        # candidate probabilities (B,S,V) -> embeddings (B,S,d): own bias-free map, or probs @ token embedding
        # (the EBT has no vocabulary head: tie_embeddings ties its other vocabulary matrix, this map)
        self.cand_embed = None if tied_candidate_map(cfg) else nn.Linear(V, d, bias=False)
        self.step_embed = nn.Embedding(self.n_step_embeddings, d) if self.P else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(d, cfg.norm_eps)
        self.energy_head = nn.Linear(d, 1, bias=False)
        init_weights(self, cfg.init_std, cfg.n_layers)
        # System-2 replay buffer: per-process training state, not a parameter (model/replay.py)
        self.replay = ReplayBuffer(e.replay_buffer_size, e.replay_fraction) if e.replay_buffer_size else None
        alpha = torch.tensor([float(e.step_size)])  # shape (1,): DeepSpeed cannot broadcast 0-dim parameters
        if e.step_size_learnable:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)  # fixed step size: state, not a frozen parameter

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter name -> learning-rate multiplier; parameters not listed use 1.0."""
        return {"alpha": self.cfg.ebt.step_size_lr_multiplier} if self.cfg.ebt.step_size_learnable else {}

    # --- the energy network (docs/ebt.md §1) ----------------------------------------------------------------

    def _rotary(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return rotary_cos_sin(
            positions, self.cfg.head_dim, self.cfg.rope_theta, table_dtype(self.embed.weight)
        )

    def observed_input(self, tokens: Tensor, step: int) -> Tensor:
        """tokens (B, S) -> (B, P+S, d): [learned embedding of the step index,] token embeddings."""
        x = self.embed(tokens)
        if self.step_embed is None:
            return x
        index = torch.full((tokens.shape[0], 1), min(step, self.n_step_embeddings - 1), device=tokens.device)
        return torch.cat([self.step_embed(index), x], dim=1)

    def candidate_input(self, probs: Tensor) -> Tensor:
        """candidate probabilities p = softmax(candidate logits) (B, S, V) -> embeddings (B, S, d)."""
        if self.cand_embed is None:
            return probs.to(self.embed.weight.dtype) @ self.embed.weight  # (B,S,V) @ (V,d)
        # F.linear, not the module call: p can be a leaf of `autograd.grad`, which module backward hooks
        # (profilers, FlopCounterMode) cannot take as a module input
        weight = self.cand_embed.weight  # (d, V)
        return F.linear(probs.to(weight.dtype), weight)

    def energy(self, tokens: Tensor, probs: Tensor, step: int) -> Tensor:
        """Reference energy of candidate probabilities (B, S, V): one pass over the whole (B, P+2S, d)
        sequence, as the authors compute it at every step -> energies (B, S)."""
        S = tokens.shape[1]
        obs_pos, cand_pos = positions(S, self.P, tokens.device)
        cos, sin = self._rotary(torch.cat([obs_pos, cand_pos]))
        mask = full_mask(S, self.P, tokens.device)
        h = torch.cat([self.observed_input(tokens, step), self.candidate_input(probs)], dim=1)
        for block in self.blocks:
            h = block(h, cos, sin, mask)
        return self.energy_head(self.norm(h[:, self.P + S :])).squeeze(-1)  # candidate rows only

    def observed_kv(self, tokens: Tensor, step: int) -> list[tuple[Tensor, Tensor]]:
        """Per-layer keys/values (B, H, P+S, h) of the observed stream, which never sees a candidate, so one
        computation serves every step with this step index (docs/ebt.md §1, observed-stream reuse). Only
        keys/values leave it: the last block stops at them, and its attention needs no double backward (the
        candidate gradient never runs through it), so it uses the fused causal kernel even in training."""
        S = tokens.shape[1]
        obs_pos, _ = positions(S, self.P, tokens.device)
        cos, sin = self._rotary(obs_pos)
        x = self.observed_input(tokens, step)
        if self.cfg.kernels.compile:  # first-order only (no create_graph gradient runs through it)
            return compiled(self, "observed_stream")(x, cos, sin)
        return self.observed_stream(x, cos, sin)

    def observed_stream(self, x: Tensor, cos: Tensor, sin: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The blocks of `observed_kv` on its input x (B, P+S, d): the part `kernels.compile` compiles."""
        kvs = []
        for block in self.blocks[:-1]:
            x, kv = block.forward_kv(x, cos, sin)  # causal
            kvs.append(kv)
        return [*kvs, self.blocks[-1].keys_values(x, cos, sin)]

    def candidate_energy(self, observed_kv: list[tuple[Tensor, Tensor]], probs: Tensor) -> Tensor:
        """Energies (B, S) of candidate probabilities (B, S, V) from the candidate stream alone, attending to
        precomputed observed keys/values. Equal to `energy` (same mask and positions), at a fraction of the
        compute."""
        return self.candidate_stream(observed_kv, self.candidate_input(probs))

    def candidate_stream(self, observed_kv: list[tuple[Tensor, Tensor]], c: Tensor) -> Tensor:
        """Energies (B, S) of candidate embeddings c (B, S, d): each candidate row attends to the observed
        keys/values it may see and to itself (Block.forward_candidates), layer by layer."""
        S = c.shape[1]
        _, cand_pos = positions(S, self.P, c.device)
        cos, sin = self._rotary(cand_pos)
        bias = observed_bias(S, self.P, c.dtype, c.device)  # (S, P+S)
        blocks = candidate_blocks(S, self.P)  # rows scored against only the observed keys they may see
        for block, kv in zip(self.blocks, observed_kv, strict=True):
            c = block.forward_candidates(c, cos, sin, kv, bias, blocks)
        return self.energy_head(self.norm(c)).squeeze(-1)

    def candidate_matrix(self) -> Tensor:
        """The candidate map as a (V, d) matrix M, candidate embedding = p @ M (a view, no copy)."""
        return self.embed.weight if self.cand_embed is None else self.cand_embed.weight.T

    # --- energy minimisation (docs/ebt.md §2) ---------------------------------------------------------------

    def train_steps(self, step_seed: int | None) -> list[int]:
        """Step indices of one training forward: K = mcmc_steps, or K drawn uniformly from
        `train_step_counts` (a batch-level draw: from step_seed, else the global RNG). Steps beyond
        mcmc_steps keep the last index (the authors' `randomize_mcmc_num_steps_final_landscape`)."""
        low, high = self.cfg.ebt.train_step_counts
        K = low
        if high > low:
            gen = None if step_seed is None else torch.Generator().manual_seed(_mix(step_seed))
            K = int(torch.randint(low, high + 1, (), generator=gen))
        return list(range(K))

    @property
    def eval_steps(self) -> int:
        """Steps at evaluation: the trained count, or its maximum if randomised (the authors' validation)."""
        return self.cfg.ebt.train_step_counts[1]

    def initial_candidate(self, tokens: Tensor, noise: Noise) -> Tensor:
        """(B, S, V) logits: Gaussian noise (std candidate_init_std) or zeros, in float32 (float64 if the
        model is float64) whatever the parameter dtype, so the descent's updates keep their precision."""
        e, (B, S) = self.cfg.ebt, tokens.shape
        dtype = table_dtype(self.embed.weight)
        if e.candidate_init == "zeros":
            return torch.zeros(B, S, self.cfg.vocab_size, device=tokens.device, dtype=dtype)
        candidate = noise.randn(S, self.cfg.vocab_size)
        return (candidate.mul_(e.candidate_init_std) if e.candidate_init_std != 1 else candidate).to(dtype)

    def descend(
        self,
        tokens: Tensor,
        candidate: Tensor,
        steps: Sequence[int],
        noise: Noise,
        *,
        create_graph: bool,
        alpha: Tensor,
        langevin_std: float,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Gradient descent on the energy, in the authors' form (docs/ebt.md §0, §2): each step reads the
        candidate ŷ as logits, normalises it, p = softmax(ŷ), takes g = ∂E/∂p (w.r.t. the probabilities, not
        the logits) and sets ŷ ← p − α·g, which the next softmax and this step's prediction read as logits.
        Yields, per step, (candidate after the step (B,S,V), energy at the step's input (B,S)).
        alpha: scalar or (B,S,1). create_graph keeps the graph through every step (only the last with
        truncate_to_last_step) so the loss can be backpropagated through the descent."""
        e = self.cfg.ebt
        cached_kv: dict[int, list[tuple[Tensor, Tensor]]] = {}  # observed stream per step index, this call
        for k, step in enumerate(steps):
            keep_graph = create_graph and (not e.truncate_to_last_step or k == len(steps) - 1)
            with torch.enable_grad():  # the candidate gradient is needed even under torch.no_grad()
                if e.detach_between_steps or not create_graph or k == 0:
                    candidate = candidate.detach()  # no path back to earlier steps (System-1, inference)
                if langevin_std > 0:
                    kick = noise.randn(*candidate.shape[1:]).to(candidate.dtype)  # (B, S, V)
                    candidate = candidate + langevin_std * kick  # noise on the logits, before the softmax
                probs = candidate.softmax(-1)  # (B, S, V): what the energy reads and is differentiated by
                if e.reuse_observed_kv:
                    index = min(step, self.n_step_embeddings - 1)
                    if index not in cached_kv:
                        cached_kv[index] = self.observed_kv(tokens, step)
                    energy, candidate = self.reuse_step(cached_kv[index], probs, alpha, keep_graph)
                else:
                    energy, candidate = self.full_step(tokens, probs, step, alpha, keep_graph)
            yield candidate, energy.detach()

    def full_step(
        self, tokens: Tensor, probs: Tensor, step: int, alpha: Tensor, keep_graph: bool
    ) -> tuple[Tensor, Tensor]:
        """One descent step the authors' way (the reference): the energy of the whole sequence, g = ∂E/∂p by
        autograd, ŷ ← p − α·g -> (energy (B, S), new candidate logits (B, S, V))."""
        if not probs.requires_grad:
            probs.requires_grad_()  # detached: p is the leaf that ∂E/∂p is taken for
        # Fused attention kernels have no double backward: the kept graph uses the math kernel.
        with sdpa_kernel(SDPBackend.MATH) if keep_graph else nullcontext():
            energy = self.energy(tokens, probs, step)
        (grad,) = torch.autograd.grad(energy.sum(), probs, create_graph=keep_graph)  # ∂E/∂p (B, S, V)
        if not torch.isfinite(grad).all():
            raise NonFiniteEnergyGradient("non-finite energy gradient in a descent step")
        return energy, probs - alpha * grad

    def reuse_step(
        self, observed_kv: list[tuple[Tensor, Tensor]], probs: Tensor, alpha: Tensor, keep_graph: bool
    ) -> tuple[Tensor, Tensor]:
        """The same step from the observed stream's keys/values (`candidate_stream`), with the gradient taken
        at the candidate embedding c = p M (B, S, d) and carried to the probabilities by the chain rule
        through the linear map, ∂E/∂p = ∂E/∂c Mᵀ. So p is no autograd leaf (the outer backward computes no
        (B, S, V) gradient for it), and ŷ ← p − (α ∂E/∂c) Mᵀ is one GEMM added onto p: g is never stored.
        -> (energy (B, S), new candidate logits (B, S, V))."""
        M = self.candidate_matrix()  # (V, d)
        c = probs.to(M.dtype) @ M  # (B, S, d)
        if not c.requires_grad:
            c.requires_grad_()  # frozen candidate map: c is the leaf
        energy = self.candidate_stream(observed_kv, c)
        (dc,) = torch.autograd.grad(energy.sum(), c, create_graph=keep_graph)  # ∂E/∂c (B, S, d)
        if not torch.isfinite(dc).all():  # g = dc Mᵀ is finite when dc and the weights are
            raise NonFiniteEnergyGradient("non-finite energy gradient in a descent step")
        B, S, V = probs.shape
        step = (alpha * dc).flatten(0, 1)  # (B*S, d)
        if not keep_graph:
            M = M.detach()  # g is a constant outside the kept graph, as autograd.grad without create_graph
        if M.dtype != probs.dtype:  # low-precision weights: the GEMM in theirs, the candidate in float32
            return energy, probs - (step.to(M.dtype) @ M.T).view(B, S, V).to(probs.dtype)
        return energy, torch.addmm(probs.flatten(0, 1), step, M.T, alpha=-1).view(B, S, V)

    def step_size(self, tokens: Tensor, noise: Noise | None) -> Tensor:
        """alpha clamped to step_size_min; with noise and step_size_random_scale s > 1, drawn per position
        uniformly from [alpha/s, alpha*s] (once per call, as the authors do) -> scalar or (B, S, 1)."""
        e = self.cfg.ebt
        alpha = self.alpha.clamp(min=e.step_size_min)
        s = e.step_size_random_scale
        if noise is None or s == 1.0:
            return alpha
        u = noise.rand(tokens.shape[1], 1).to(alpha.dtype)  # (B, S, 1)
        return alpha * (1 / s + (s - 1 / s) * u)

    # --- the uniform model interface -----------------------------------------------------------------

    def forward(
        self, tokens: Tensor, targets: Tensor, sample_ids: Tensor | None = None, step_seed: int | None = None
    ) -> Tensor:
        """Training loss: mean over descent steps of the next-token CE of each step's prediction (last step
        only with truncate_to_last_step; `training_ce`: IGNORE_INDEX targets count zero). Second-order
        through the descent when grad is enabled. sample_ids (B,) seed each row's noise (with step_seed),
        making the loss independent of how a batch is split; without them the global RNG is used.
        With the replay buffer (training mode, grad enabled) replayed rows join the batch, starting from
        their stored candidates, and the fresh rows' final candidates are stored."""
        e, B = self.cfg.ebt, tokens.shape[0]
        keys = list(range(B)) if sample_ids is None else sample_ids.tolist()
        replaying = self.replay is not None and self.training and torch.is_grad_enabled()
        replayed = []
        if replaying:
            seed = None if sample_ids is None else _mix(keys[0], step_seed or 0, _REPLAY_SALT)
            replayed = self.replay.sample(B, seed)
        if replayed:
            tokens = torch.cat([tokens, torch.stack([r.tokens for r in replayed])])  # (B+R, S)
            targets = torch.cat([targets, torch.stack([r.targets for r in replayed])])
        seeds = None
        if sample_ids is not None:
            seeds = [_mix(key, step_seed or 0) for key in keys + [r.key for r in replayed]]
        noise = Noise(tokens.shape[0], tokens.device, seeds)
        steps = self.train_steps(step_seed)
        candidate = self.initial_candidate(tokens, noise)  # (B+R, S, V)
        if replayed:  # replayed rows restart from where their last descent ended
            stored = torch.stack([r.candidate for r in replayed]).to(candidate.dtype)
            candidate = torch.cat([candidate[:B], stored])
        alpha = self.step_size(tokens, noise)
        descent = self.descend(
            tokens,
            candidate,
            steps,
            noise,
            create_graph=torch.is_grad_enabled(),
            alpha=alpha,
            langevin_std=e.langevin_noise_std,
        )
        losses = []
        for k, (candidate, _) in enumerate(descent):
            if not e.truncate_to_last_step or k == len(steps) - 1:
                losses.append(training_ce(candidate, targets, ce_chunk_rows(self.cfg)))
        if replaying:
            self.replay.add(tokens[:B], targets[:B], candidate[:B], keys)
        return torch.stack(losses).mean()

    def eval_loss(self, tokens: Tensor, targets: Tensor, sample_ids: Tensor | None = None) -> Tensor:
        """Next-token CE of the final step's prediction after `eval_steps` steps: plain candidate gradients,
        fixed noise seeds (sample ids, else the row index), no step-size randomisation."""
        return self.think(tokens, targets, self.eval_steps, sample_ids=sample_ids).ce[-1]

    @torch.no_grad()
    def think(
        self,
        tokens: Tensor,
        targets: Tensor,
        steps: int,
        candidates: int = 1,
        sample_ids: Tensor | None = None,
        langevin_noise_std: float | None = None,
        return_all: bool = False,
    ) -> Thought:
        """System-2 inference (docs/ebt.md §4). Thinking longer: `steps` may exceed the trained count (extra
        steps reuse the last step index). Self-verification: M = `candidates` initial candidates from
        different noise, each descended independently; per position the one with the lowest energy at the last
        evaluation is kept (as the authors' code: the energy evaluated at the input of the last step).
        Candidate m of a row always gets the same noise, so results for M=1 are the first candidate of those
        for M>1.
        Langevin noise: the config's sigma unless overridden (the authors keep it at inference)."""
        B, S = tokens.shape
        M = candidates
        assert steps >= 1 and M >= 1, "think needs at least one step and one candidate"
        keys = sample_ids.tolist() if sample_ids is not None else list(range(B))
        noise = Noise(M * B, tokens.device, [_mix(key, _EVAL_SALT, m) for m in range(M) for key in keys])
        rows = tokens.repeat(M, 1)  # (M*B, S), candidate-major: row m*B + b
        sigma = self.cfg.ebt.langevin_noise_std if langevin_noise_std is None else langevin_noise_std
        descent = self.descend(
            rows,
            self.initial_candidate(rows, noise),
            list(range(steps)),
            noise,
            create_graph=False,
            alpha=self.step_size(rows, None),
            langevin_std=sigma,
        )
        ce, energies, row_nll = [], [], []
        for candidate, energy in descent:
            energy = energy.view(M, B, S)
            choice = energy.argmin(0)  # (B, S)
            all_logits = candidate.view(M, B, S, -1)
            logits = all_logits.gather(0, choice[None, :, :, None].expand(1, B, S, all_logits.shape[-1]))[0]
            ce.append(F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
            token_nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
            row_nll.append(token_nll.view(B, S).sum(1))  # per sequence, for resampling windows
            energies.append(energy)
        return Thought(
            torch.stack(ce),
            torch.stack(energies),
            logits,
            choice,
            all_logits if return_all else None,
            torch.stack(row_nll),
        )


__all__ = ["EBT", "NonFiniteEnergyGradient", "Thought", "system2_recipe"]
