"""The spec's `tune:` block (orchestrator/sweep/tune_space.py and its checks in spec.py): validation by field,
sampling, how tuned values reach the sweep's trials (ids included), edge warnings, and `sweep run`'s refusal
to train an untuned spec. No Ray is started here (the search itself: test_tuning.py)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from model.family_ids import FAMILY_IDS, FAMILY_NAMES, FamilyId
from orchestrator.config import ConfigError
from orchestrator.sweep import tune_space
from orchestrator.sweep.expand import expand, tuning_state
from orchestrator.sweep.spec import SpecError, parse_spec
from orchestrator.sweep.tune_space import (
    LogUniform,
    TunedValues,
    at_edge,
    knob_families,
    knob_label,
    power_law_lr,
)
from orchestrator.sweep.tuning import plan_searches, sample_space, write_tuning_file

BASE: dict[str, Any] = {
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 320, "context_length": 32},
    "data": {"source": "stdlib", "vocab_size": 320},
    "train": {"tokens": 25_600, "global_batch_size": 8, "micro_batch_size": 8},
}
TUNED: dict[str, Any] = {
    "name": "tuned",
    "families": ["ebt", "transformer_pp"],
    "base": BASE,
    "axes": {"params": {"d_model": [32, 64], "head_dim": 16}, "data": {"tokens": [12_800, 25_600]}},
    "tune": {
        "num_samples": 4,
        "budget": {"fraction": 0.5},
        "reports": 4,
        "space": {
            "transformer_pp": {"lr": {"loguniform": [1e-3, 3e-2]}},
            "ebt": {"lr": {"loguniform": [1e-3, 3e-2]}, "alpha": [5, 50, 500], "mcmc_steps": [2, 3]},
        },
    },
}


def spec_with(path: str, value: Any, output_dir: Path | None = None) -> dict[str, Any]:
    out = copy.deepcopy(TUNED)
    if output_dir is not None:
        out["output_dir"] = str(output_dir)
    keys = path.split(".")
    node = out
    for k in keys[:-1]:
        node = node[int(k) if k.isdigit() else k]
    node[keys[-1]] = value
    return out


def test_a_knob_in_a_familys_own_section_is_that_familys_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which families have a knob follows from the registry's sections: a new family gets the shared knobs
    (lr) and none of the EBT's, with no edit to KNOBS."""
    assert knob_families("lr") == FAMILY_NAMES
    for knob in ("alpha", "mcmc_steps", "alpha_lr_multiplier"):
        assert knob_families(knob) == ("ebt",), knob
    rnn = FamilyId("rnn", tag="rnn", label="RNN", section="rnn")
    monkeypatch.setattr(tune_space, "FAMILY_IDS", {**FAMILY_IDS, "rnn": rnn})
    monkeypatch.setattr(tune_space, "FAMILY_NAMES", (*FAMILY_NAMES, "rnn"))
    assert "rnn" in knob_families("lr") and knob_families("alpha") == ("ebt",)


@pytest.mark.parametrize(
    ("path", "value", "field", "reason"),
    [
        (
            "tune.space.transformer_pp.lr",
            {"loguniform": [0.1, 0.01]},
            "tune.space.transformer_pp.lr",
            "low < high",
        ),
        ("tune.space.transformer_pp.lr", {"loguniform": [0, 0.01]}, "tune.space.transformer_pp.lr", "> 0"),
        ("tune.space.transformer_pp.lr", [], "tune.space.transformer_pp.lr", "empty"),
        ("tune.space.transformer_pp.alpha", [5, 50], "tune.space.transformer_pp.alpha", "has no alpha"),
        ("tune.space.ebt.mcmc_steps", [0, 2], "tune.space.ebt.mcmc_steps.0", ">= 1"),
        ("tune.space.ebt.bogus", [1], "tune.space.ebt.bogus", "unknown field"),
        ("tune.space.gpt", {"lr": [1e-3]}, "tune.space", "gpt"),
        ("tune.num_samples", 0, "tune.num_samples", ">= 1"),
        ("tune.budget", {"fraction": 1.5}, "tune.budget.fraction", "<= 1"),
        ("tune.budget", {"fraction": 0.5, "tokens": 100}, "tune.budget", "exactly one"),
        ("tune.budget", {"tokens": 512}, "tune.budget", "fewer than reports"),
        ("tune.sizes", [32, 40], "tune.sizes.1", "not a size of this sweep"),
        ("tune.grace_reports", 5, "tune", "grace_reports"),
        ("tune.reduction_factor", 1, "tune.reduction_factor", ">= 2"),
        ("tune.max_concurrent", 0, "tune.max_concurrent", ">= 1"),
    ],
)
def test_an_impossible_search_space_is_refused_naming_the_field(
    path: str, value: Any, field: str, reason: str
) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(spec_with(path, value))
    fields = [f for f, _ in err.value.problems]
    assert any(f.startswith(field) for f in fields), err.value.problems
    assert reason in str(err.value), err.value


def test_the_fingerprint_holds_what_a_search_asks_not_how_it_runs() -> None:
    """tune.max_concurrent changes how the trials are scheduled: a tuning.json made with another value still
    answers the same question. The number of samples does not."""
    sizes = {"transformer_pp:d32:L1": {"d_model": 32}}
    default = parse_spec(spec_with("tune.num_samples", 4)).tune
    one_at_a_time = parse_spec(spec_with("tune.max_concurrent", 1)).tune
    more_samples = parse_spec(spec_with("tune.num_samples", 5)).tune
    assert one_at_a_time.max_concurrent == 1 and default.max_concurrent is None
    assert default.fingerprint(sizes) == one_at_a_time.fingerprint(sizes) != more_samples.fingerprint(sizes)


def test_a_tuned_lr_conflicts_with_an_lr_rule_and_a_searched_k_must_fit_the_base() -> None:
    rule = {"rule": "power", "ref_params": 1e4, "ref_lr": 1e-2, "exponent": -0.5}
    with pytest.raises(SpecError, match=r"tune\.space\.ebt\.lr: conflicts with rules\.lr"):
        parse_spec({**TUNED, "rules": {"lr": rule}})
    base = {**BASE, "model": {**BASE["model"], "ebt": {"mcmc_steps_random_max": 2}}}
    with pytest.raises(SpecError, match=r"tune\.space\.ebt\.mcmc_steps: 3 gives an invalid ebt trial"):
        parse_spec({**TUNED, "base": base})


def test_sampling_is_seeded_per_knob_and_both_families_draw_the_same_lrs() -> None:
    spec = parse_spec(TUNED)
    ebt, tpp = (sample_space(spec.tune.space[f], 6, seed=0) for f in ("ebt", "transformer_pp"))
    assert [s["lr"] for s in ebt] == [s["lr"] for s in tpp]
    assert sample_space(spec.tune.space["ebt"], 6, seed=0) == ebt
    assert sample_space(spec.tune.space["ebt"], 6, seed=1) != ebt
    assert all(
        1e-3 <= s["lr"] <= 3e-2 and s["alpha"] in (5, 50, 500) and s["mcmc_steps"] in (2, 3) for s in ebt
    )


def test_searches_cover_every_family_and_size_on_the_tuning_budget(tmp_path: Path) -> None:
    spec = parse_spec(spec_with("output_dir", str(tmp_path)))
    searches = plan_searches(spec)
    assert sorted(s.key for s in searches) == [
        "ebt:d32:L1",
        "ebt:d64:L1",
        "transformer_pp:d32:L1",
        "transformer_pp:d64:L1",
    ]
    for s in searches:
        assert 1 <= len(s.trials) <= 4  # repeated draws are trained once
        for t in s.trials:
            c = t.config
            # half of 25,600 tokens is 50 steps of 256 tokens: 4 reports of 12 steps
            assert c.train.tokens == 12_288 and c.total_steps == 48 and c.train.eval_every == 12
            assert c.model.d_model == s.base.model.d_model and c.optim.lr == s.values[t.id]["lr"]
            assert c.folder.path.parent == tmp_path / "tuned" / "tuning"
    only_32 = parse_spec(spec_with("tune.sizes", [32], tmp_path))
    assert {s.key for s in plan_searches(only_32)} == {"ebt:d32:L1", "transformer_pp:d32:L1"}


def _finish_search(spec: Any, lrs: dict[str, float]) -> None:
    """Write tuning.json as `run_tuning` would once every size has a choice (`lrs`: size key -> chosen lr)."""
    state = tuning_state(spec)
    sizes = {}
    for key, base in state.sizes.items():
        values = {"lr": lrs[key]} | ({"alpha": 50.0} if base.model.family == "ebt" else {})
        sizes[key] = {
            "family": base.model.family,
            "d_model": base.model.d_model,
            "n_layers": base.model.n_layers,
            "n_params": 10_000 * base.model.d_model // 32,
            "trials": [],
            "counts": {},
            "chosen": {"values": values, "val_loss": 5.0, "id": "x"},
            "edges": [],
        }
    write_tuning_file(state, sizes)


def test_tuned_values_reach_the_trials_configs_and_ids_and_the_plan_says_so(tmp_path: Path) -> None:
    spec = parse_spec(spec_with("output_dir", str(tmp_path)))
    untuned = {t.name: t for t in expand(spec)}
    assert tuning_state(spec).status == "missing" and all(t.tuned is None for t in untuned.values())
    lrs = {
        "ebt:d32:L1": 2e-3,
        "ebt:d64:L1": 1e-3,
        "transformer_pp:d32:L1": 8e-3,
        "transformer_pp:d64:L1": 4e-3,
    }
    _finish_search(spec, lrs)
    assert tuning_state(spec).status == "complete"
    tuned = expand(spec)
    for t in tuned:
        key = f"{t.family}:d{t.config.model.d_model}:L{t.config.model.n_layers}"
        assert t.config.optim.lr == lrs[key] and t.tuned is not None and t.tuned.how == "tuned"
        if t.family == "ebt":
            assert t.config.model.ebt.step_size == 50.0
        assert t.id != untuned[t.name].id, "a tuned trial must not reuse the untuned trial's folder or run"
        assert t.id in t.config.folder.path.name
    # another question (a changed space) makes tuning.json stale: the spec's own values again
    other = parse_spec(spec_with("tune.space.transformer_pp.lr", [1e-3, 1e-2], tmp_path))
    assert tuning_state(other).status == "stale"
    assert {t.id for t in expand(other)} == {t.id for t in untuned.values()}


def test_sizes_left_out_get_a_power_law_lr_and_the_nearest_sizes_other_knobs() -> None:
    chosen = {
        "ebt:d32:L1": {"family": "ebt", "n_params": 10_000, "values": {"lr": 4e-3, "alpha": 50.0}},
        "ebt:d128:L1": {"family": "ebt", "n_params": 160_000, "values": {"lr": 1e-3, "alpha": 500.0}},
    }
    values = TunedValues("f", chosen)
    mid = values.for_trial("ebt", 64, 1, 40_000)
    assert mid is not None and mid.how == "carried"
    assert math.isclose(mid.values["lr"], 2e-3, rel_tol=1e-9)  # lr ∝ N^-0.5 through the two tuned sizes
    assert mid.values["alpha"] == 50.0 and mid.from_size == "ebt:d32:L1"
    assert values.for_trial("ebt", 32, 1, 10_000).how == "tuned"
    assert values.for_trial("transformer_pp", 32, 1, 10_000) is None
    assert math.isclose(power_law_lr([(100, 1e-2)], 400), 1e-2)  # one size: carried as is


def test_edge_warnings_and_labels() -> None:
    span = LogUniform(loguniform=(1e-3, 1e-1))
    assert at_edge(span, 1.1e-3) == "low" and at_edge(span, 0.09) == "high" and at_edge(span, 1e-2) is None
    assert at_edge([5.0, 50.0, 500.0], 500.0) == "high" and at_edge([5.0, 50.0, 500.0], 50.0) is None
    assert knob_label({"lr": 0.0031, "alpha": 500.0, "mcmc_steps": 2}) == "lr0.0031-a500-K2"


def test_sweep_run_refuses_an_untuned_spec_before_anything_starts(tmp_path: Path) -> None:
    from orchestrator.sweep.runner import run_sweep

    spec = parse_spec(spec_with("output_dir", str(tmp_path)))
    with pytest.raises(ConfigError, match="run `ebtscale sweep tune` first, or pass --untuned"):
        run_sweep(spec)
    assert not (tmp_path / "tuned" / "sweep.json").exists() and not (tmp_path / "mlflow.db").exists()
