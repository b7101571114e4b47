"""Synthetic scaling data from known laws, shared by the analysis tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

# True laws per family and axis: y = E + A * x^-alpha (E = 0: a pure power law).
TRUE = {
    ("ebt", "data"): {"E": 0.0, "A": 60.0, "alpha": 0.25},
    ("transformer_pp", "data"): {"E": 0.0, "A": 40.0, "alpha": 0.2},
    ("ebt", "params"): {"E": 0.0, "A": 30.0, "alpha": 0.2},
    ("transformer_pp", "params"): {"E": 0.0, "A": 25.0, "alpha": 0.18},
}
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def chinchilla_loss(N: np.ndarray, D: np.ndarray, p: dict[str, float] = CHINCHILLA) -> np.ndarray:
    return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


# One exponent for N and D (the shared form), as over-training suites find it.
SHARED = {"E": 1.8, "A": 500.0, "B": 700.0, "alpha": 0.3}


def shared_loss(N: np.ndarray, D: np.ndarray, p: dict[str, float] = SHARED) -> np.ndarray:
    return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["alpha"]


def overtrain_truth(p: dict[str, float] = SHARED) -> dict[str, float]:
    """The same surface as the over-training law E + C^-eta (A' M^eta + B' M^-eta), C = 6ND, M = D/N: its
    first term is A' 6^-eta N^-2eta and its second B' 6^-eta D^-2eta, so eta = alpha/2, A' = A 6^eta."""
    eta = p["alpha"] / 2
    return {"E": p["E"], "A": p["A"] * 6**eta, "B": p["B"] * 6**eta, "eta": eta}


def random_grid(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (N, D) points log-uniform over 1e7-1e10 parameters and 1e9-1e12 tokens."""
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    return N, D


def four_sizes(noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An over-training suite of four model sizes (2e7-2e8, one decade), each at 6 tokens-per-parameter
    ratios from 10 to 1280, loss from SHARED with log-normal noise: D pins the exponent, N alone does not."""
    N = np.repeat(np.geomspace(2e7, 2e8, 4), 6)
    D = N * np.tile(np.geomspace(10, 1280, 6), 4)
    return N, D, shared_loss(N, D) * np.exp(noise * rng.standard_normal(N.size))


def _row(family: str, axis: str, i: int, **values) -> dict:
    base = {
        "trial_id": f"{family}-{axis}-{i}",
        "name": f"{family}-{axis}-{i}",
        "family": family,
        "axis": axis,
        "status": "finished",
        "status_reason": "",
        "n_params": 2e6,
        "n_params_non_embedding": 1e6,
        "tokens": 1e8,
        "batch_size": 32,
        "n_layers": 4,
        "d_model": 128,
        "flops": 6 * 2e6 * 1e8,
        "flops_budget": np.nan,
        "val_loss": np.nan,
        "seed": 0,
    }
    base.update(values)
    base["val_perplexity"] = float(np.exp(base["val_loss"]))
    return base


def make_trials(
    axes: tuple[str, ...] = ("data", "params"),
    n: int = 8,
    noise: float = 0.01,
    seed: int = 0,
    flops_axis=False,
) -> pd.DataFrame:
    """A trials table in the orchestrator's schema: every (family, axis) of TRUE with n log-spaced points,
    multiplicative log-normal noise; optionally an isoFLOP grid (4 budgets x 5 sizes) from CHINCHILLA."""
    rng = np.random.default_rng(seed)
    rows = []
    for (family, axis), p in TRUE.items():
        if axis not in axes:
            continue
        xs = np.geomspace(1e6, 1e9, n) if axis == "data" else np.geomspace(1e5, 1e8, n)
        col = "tokens" if axis == "data" else "n_params_non_embedding"
        for i, x in enumerate(xs):
            y = (p["E"] + p["A"] * x ** -p["alpha"]) * np.exp(noise * rng.standard_normal())
            rows.append(_row(family, axis, i, **{col: x, "val_loss": y}))
    if flops_axis:
        for family in ("ebt", "transformer_pp"):
            for C in (1e18, 1e19, 1e20, 1e21):
                n_opt = 0.6 * (C / 6) ** 0.45
                for j, N in enumerate(n_opt * np.geomspace(0.1, 10, 5)):
                    D = C / (6 * N)
                    y = chinchilla_loss(N, D) * np.exp(noise * rng.standard_normal())
                    rows.append(
                        _row(
                            family,
                            "flops",
                            10 * int(np.log10(C)) + j,
                            n_params=N,
                            n_params_non_embedding=0.9 * N,
                            tokens=D,
                            flops=C,
                            flops_budget=C,
                            val_loss=y,
                        )
                    )
    return pd.DataFrame(rows)


def make_thinking() -> pd.DataFrame:
    rows = []
    for family, gain in (("ebt", 0.08), ("transformer_pp", 0.0)):
        for steps in (1, 2, 4, 8):
            ppl = 20 * (1 - gain * np.log2(steps) / 3)
            rows.append(
                {
                    "family": family,
                    "mode": "steps",
                    "steps": steps,
                    "candidates": 1,
                    "forward_passes": steps,
                    "val_loss": np.log(ppl),
                    "val_perplexity": ppl,
                }
            )
        for cands in (1, 2, 4, 8):
            ppl = 19 * (1 - gain * np.log2(cands) / 4)
            rows.append(
                {
                    "family": family,
                    "mode": "verify",
                    "steps": 2,
                    "candidates": cands,
                    "forward_passes": 2 * cands,
                    "val_loss": np.log(ppl),
                    "val_perplexity": ppl,
                }
            )
    return pd.DataFrame(rows)


STEPS_BUDGETS = (1, 2, 3, 4, 5, 6)  # thinking longer: forward passes = steps
VERIFY_CANDIDATES = (1, 2, 4)  # self-verification at 2 steps: forward passes = 2 x candidates


def make_split_thinking(
    gains: dict[str, float], windows: int = 64, noise: float = 0.05, seed: int = 0
) -> pd.DataFrame:
    """A thinking table as `ebtscale think` writes it, per split in `gains` ("val", "ood"): the EBT's
    perplexity falls by exactly gain x (k-1)/5 at k thinking steps and by gain x (1, 2, 3)/3 with 1, 2, 4
    verified candidates (relative to 1 forward pass), with per-window losses whose noise (sd `noise` nats
    per token) sums to zero in every row, so the pooled reductions are exact; Transformer++ flat."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, gain in gains.items():
        tokens = rng.integers(40, 65, size=windows)
        base = tokens * rng.uniform(3.0, 4.0, size=windows)  # summed NLL per window at 1 forward pass
        ppl1 = float(np.exp(base.sum() / tokens.sum()))
        budgets = [("steps", k, 1, gain * (k - 1) / 5) for k in STEPS_BUDGETS]
        budgets += [("verify", 2, m, gain * (i + 1) / 3) for i, m in enumerate(VERIFY_CANDIDATES)]
        for mode, steps, cands, g in budgets:
            jitter = rng.normal(0, noise, size=windows) * tokens
            if (mode, steps) != ("steps", 1):  # the reference row keeps its own losses
                jitter -= jitter.sum() * tokens / tokens.sum()  # zero in the pooled loss
                nll = base + np.log1p(-g) * tokens + jitter
            else:
                nll = base
            loss = float(nll.sum() / tokens.sum())
            rows.append(
                {
                    "split": split,
                    "source": {"val": "stdlib", "ood": "prose"}.get(split, split),
                    "family": "ebt",
                    "mode": mode,
                    "steps": steps,
                    "candidates": cands,
                    "forward_passes": steps * cands,
                    "val_loss": loss,
                    "val_perplexity": float(np.exp(loss)),
                    "window_nll": nll.tolist(),
                    "window_tokens": tokens.tolist(),
                }
            )
        for fp in sorted({1, *STEPS_BUDGETS, *(2 * m for m in VERIFY_CANDIDATES)}):
            loss = float(np.log(ppl1 * 0.8))
            rows.append(
                {
                    "split": split,
                    "source": {"val": "stdlib", "ood": "prose"}.get(split, split),
                    "family": "transformer_pp",
                    "mode": "steps",
                    "steps": 1,
                    "candidates": 1,
                    "forward_passes": fp,
                    "val_loss": loss,
                    "val_perplexity": float(np.exp(loss)),
                }
            )
    return pd.DataFrame(rows)


def with_costs(
    trials: pd.DataFrame, cost_of_6n: dict[str, float], flop_per_s: dict[str, float]
) -> pd.DataFrame:
    """The trials with the cost columns of orchestrator.sweep.results: executed FLOPs = a family's multiple of
    6N per token x tokens, `flops` left at the 6ND convention for both (so a fit that used it would get the
    per-FLOP answer wrong), and train_time_s = executed FLOPs / a family's throughput on one worker."""
    executed = trials["family"].map(cost_of_6n) * 6 * trials["n_params"] * trials["tokens"]
    return trials.assign(
        flops=6 * trials["n_params"] * trials["tokens"],
        flops_executed=executed,
        train_time_s=executed / trials["family"].map(flop_per_s),
        num_workers=1,
    )


def with_seeds(trials: pd.DataFrame, n_seeds: int, spread: float, seed: int = 0) -> pd.DataFrame:
    """Every row repeated for n_seeds seeds, each seed's loss times exp(spread * N(0, 1))."""
    rng = np.random.default_rng(seed)
    copies = []
    for s in range(n_seeds):
        noise = np.exp(spread * rng.standard_normal(len(trials))) if spread else 1.0
        copies.append(
            trials.assign(seed=s, name=trials["name"] + f"-s{s}", val_loss=trials["val_loss"] * noise)
        )
    return pd.concat(copies, ignore_index=True)
