"""The lr-vs-size law (orchestrator/sweep/lr_law.py): a spec's declared rule and the tuning stage's fitted
carry are one law, so a law fitted through a declared law's lrs gives that law's lr at any other size."""

from __future__ import annotations

import math
from typing import Any

import pytest

from model.family import count_params
from orchestrator.sweep.expand import expand
from orchestrator.sweep.lr_law import LrPowerLaw
from orchestrator.sweep.spec import parse_spec
from orchestrator.sweep.tune_space import TunedValues


@pytest.mark.parametrize(
    "law",
    [LrPowerLaw(1e5, 1e-3, -0.5), LrPowerLaw(8.5e7, 6e-4, -0.26), LrPowerLaw(1e4, 1e-2, 0.0)],
)
def test_a_law_fitted_to_a_declared_laws_lrs_is_that_law(law: LrPowerLaw) -> None:
    fitted = LrPowerLaw.fit([(n, law.at(n)) for n in (1e4, 2e5, 3e6)])
    assert fitted.exponent == pytest.approx(law.exponent, abs=1e-12)
    for n in (5e3, 7e4, 1e8):  # between and beyond the fitted sizes
        assert fitted.at(n) == pytest.approx(law.at(n), rel=1e-12)


def test_points_at_one_size_carry_their_lr_to_every_size() -> None:
    fitted = LrPowerLaw.fit([(1e5, 2e-3), (1e5, 8e-3)])
    assert fitted.exponent == 0.0 and fitted.at(1e7) == pytest.approx(4e-3, rel=1e-12)  # geometric mean


def test_tuning_carries_a_declared_rules_lrs_to_an_untuned_size_unchanged() -> None:
    """Through the real paths: expand applies a spec's rules.lr to three sizes; tuning values holding the two
    outer sizes' lrs carry one to the middle size (TunedValues.for_trial) equal to the rule's lr there. Fails
    if the rule and the carry use different formulas or different N."""
    spec: dict[str, Any] = {
        "name": "law",
        "families": ["transformer_pp"],
        "base": {
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "vocab_size": 320, "context_length": 32},
            "data": {"source": "stdlib", "vocab_size": 320},
            "train": {"tokens": 25_600, "global_batch_size": 8, "micro_batch_size": 8},
        },
        "rules": {"lr": {"rule": "power", "ref_params": 1e5, "ref_lr": 1e-3, "exponent": -0.37}},
        "axes": {"params": {"d_model": [32, 64, 128], "head_dim": 16}},
    }
    trials = {t.config.model.d_model: t.config for t in expand(parse_spec(spec))}
    n = {d: count_params(cfg.model)["non_embedding"] for d, cfg in trials.items()}
    assert trials[32].optim.lr == 1e-3 * (n[32] / 1e5) ** -0.37  # the declared formula, exactly
    chosen = {
        f"transformer_pp:d{d}:L2": {
            "family": "transformer_pp",
            "n_params": n[d],
            "values": {"lr": trials[d].optim.lr},
        }
        for d in (32, 128)
    }
    carried = TunedValues("f", chosen).for_trial("transformer_pp", 64, 2, n[64])
    assert carried is not None and carried.how == "carried"
    assert carried.values["lr"] == pytest.approx(trials[64].optim.lr, rel=1e-12)
    assert not math.isclose(trials[64].optim.lr, trials[32].optim.lr)  # the sizes' lrs do differ
