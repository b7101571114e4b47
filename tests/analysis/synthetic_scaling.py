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
