"""The transformer blocks shared by Transformer++ and the EBT: RMSNorm pre-norm, rotary attention, SwiGLU.

Shapes: B batch, T sequence, d model width, H heads, h head dim (d = H*h).
Positions are passed explicitly (not implied by the sequence index) because the EBT places a candidate
at the position of the token it predicts, beside the observed stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # x: (..., d) -> (..., d), normalised by the root-mean-square over d
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_cos_sin(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """cos/sin tables for integer positions (T,) -> two (T, h/2) tensors, in float32 (float64 for a float64
    model, whose results are then exact to float64: the EBT's reference tests compare at 1e-9)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).to(dtype) / head_dim)
    angles = positions.to(dtype)[:, None] * inv_freq[None, :]  # (T, h/2)
    return angles.cos(), angles.sin()


def table_dtype(weight: Tensor) -> torch.dtype:
    """Precision of position tables and candidates for a model whose parameters have weight's dtype: float32,
    or float64 for a float64 model (never bf16: rounding positions or descent updates loses information)."""
    return torch.promote_types(weight.dtype, torch.float32)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[..., :h/2], x[..., h/2:]) by the position angle. x: (B, H, T, h); cos/sin: (T, h/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions, via scaled_dot_product_attention, no biases."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, T, d). mask: None = causal, else a boolean (T, T) 'may attend' matrix."""
        return self.forward_kv(x, cos, sin, mask)[0]

    def forward_kv(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None = None,
        past_kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attention that also returns this call's rotated keys/values (B, H, T, h), so that a later call can
        attend to them as `past_kv` (P earlier positions, prepended; mask is then a boolean (T, P+T) matrix).
        The EBT uses this to compute its observed stream once and reuse it for every candidate."""
        B, T, d = x.shape
        q, k, v = self.rotated_qkv(x, cos, sin)
        keys, values = k, v
        if past_kv is not None:
            keys, values = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)  # (B,H,P+T,h)
        if mask is None:
            assert past_kv is None, "attending to past keys/values needs an explicit mask"
            y = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, d)), (k, v)  # (B, T, d)

    def rotated_qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d) -> queries, keys, values (B, H, T, h), queries and keys rotated to their positions."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3x(B,H,T,h)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward_candidates(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        observed_kv: tuple[Tensor, Tensor],
        bias: Tensor,
        blocks: Sequence[tuple[int, int, int]],
    ) -> Tensor:
        """Attention of candidate rows x (B, S, d) that each see some observed keys/values (B, H, n, h), as
        `bias` (S, n: 0 may attend, -inf may not) says, and themselves only -> (B, S, d).

        The same as a masked attention over [observed | candidates], whose candidate-by-candidate block is
        diagonal: its one live score per row is a dot product, computed as such (no S x S scores, no mask
        over them). Plain matmuls and a softmax, so it has a double backward, which fused SDPA kernels lack.
        `blocks` [(start, end, keys)] split the rows: rows start..end-1 score only the first `keys` observed
        keys, past which their bias is all -inf (skipping those scores changes nothing)."""
        B, S, d = x.shape
        q, k, v = self.rotated_qkv(x, cos, sin)  # (B, H, S, h)
        keys, values = observed_kv  # (B, H, n, h)
        q = q * self.head_dim**-0.5
        parts = []  # (B, H, rows, h) per block
        for start, end, m in blocks:
            rows = slice(start, end)
            observed = bias[rows, :m] + q[:, :, rows] @ keys[:, :, :m].transpose(-2, -1)  # (B, H, r, m)
            itself = (q[:, :, rows] * k[:, :, rows]).sum(-1, keepdim=True)  # (B, H, r, 1)
            w, w_self = torch.cat([observed, itself], dim=-1).softmax(-1).split([m, 1], dim=-1)
            parts.append(w @ values[:, :, :m] + w_self * v[:, :, rows])  # (B, H, r, h)
        y = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]  # (B, H, S, h)
        return self.proj(y.transpose(1, 2).reshape(B, S, d))


class SwiGLU(nn.Module):
    """LLaMA MLP: down(silu(gate(x)) * up(x)), hidden width cfg.ff_dim."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.ff_dim, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.ff_dim, bias=False)
        self.down = nn.Linear(cfg.ff_dim, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))

    def forward_kv(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None = None,
        past_kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """`forward` that attends to `past_kv` as well and returns its own keys/values (see Attention)."""
        a, kv = self.attn.forward_kv(self.attn_norm(x), cos, sin, mask, past_kv)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), kv

    def keys_values(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """This block's rotated keys/values (B, H, T, h) of x (B, T, d), without the rest of the block."""
        return self.attn.rotated_qkv(self.attn_norm(x), cos, sin)[1:]

    def forward_candidates(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        observed_kv: tuple[Tensor, Tensor],
        bias: Tensor,
        blocks: Sequence[tuple[int, int, int]],
    ) -> Tensor:
        """`forward` of candidate rows over observed keys/values (see Attention.forward_candidates)."""
        x = x + self.attn.forward_candidates(self.attn_norm(x), cos, sin, observed_kv, bias, blocks)
        return x + self.mlp(self.mlp_norm(x))


def init_weights(module: nn.Module, std: float, n_layers: int) -> None:
    """GPT-2/nanoGPT init: N(0, std) for linears and embeddings, output projections scaled by 1/sqrt(2L)."""
    for name, p in module.named_parameters():
        if p.dim() < 2:
            continue  # norm gains stay at 1
        scale = (2 * n_layers) ** -0.5 if name.endswith(("attn.proj.weight", "mlp.down.weight")) else 1.0
        nn.init.normal_(p, mean=0.0, std=std * scale)
