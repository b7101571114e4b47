"""Sweep specs, expansion, the dry-run planner and `sweep plan`.

Specs used without EBT numbers (no lr/batch rules, no flops axis with the ebt family) run even while
model/ebt.py is missing; tests that need EBT FLOP or parameter counts skip via importorskip.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from model.family import count_params, train_flops_per_token
from model.family_ids import TRANSFORMER_PP
from orchestrator.cli.sweep import sweep_app
from orchestrator.config import ConfigError, TrialConfig
from orchestrator.sweep import expand as expand_mod
from orchestrator.sweep import plan as plan_mod
from orchestrator.sweep.expand import PlannedTrial, expand, rows_by_id, si, trial_name, unique_trials
from orchestrator.sweep.plan import (
    check_budget,
    memory_per_worker,
    model_state_bytes,
    plan,
    plan_text,
    render_plan,
)
from orchestrator.sweep.spec import AXES, SpecError, SweepSpec, load_spec, parse_spec
from tests.helpers import REPO, cli, write_yaml

ROOT = REPO
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))

BASE: dict[str, Any] = {
    "model": {"d_model": 64, "n_layers": 2, "n_heads": 2, "vocab_size": 512, "context_length": 64},
    "data": {"source": "stdlib", "vocab_size": 512},
    "train": {"tokens": 200_000, "global_batch_size": 16, "micro_batch_size": 8},
    "deepspeed": {"zero_stage": 1},
}
# Both families, every axis but flops: expands without EBT FLOP counts.
GOOD: dict[str, Any] = {
    "name": "t",
    "families": ["ebt", "transformer_pp"],
    "seeds": [0, 1],
    "base": BASE,
    "family_overrides": {"ebt": {"optim": {"lr": 0.0012}}},
    "axes": {
        "data": {"tokens": [100_000, 200_000, 400_000]},
        "batch": {"global_batch_size": [8, 16, 32]},
        "params": {"d_model": [64, 96, 128], "head_dim": 32},
        "depth": {"n_layers": [2, 4]},
    },
}
# isoFLOP grid for the Transformer++ (its FLOP count lives in model/flops.py itself).
FLOPS: dict[str, Any] = {
    "name": "iso",
    "families": ["transformer_pp"],
    "base": BASE,
    "axes": {
        "flops": {"budgets": [1e12, 3e12], "points": 3, "d_model": [32, 48, 64, 96, 128], "head_dim": 16}
    },
}


def with_value(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of spec with the dotted path set to value (list indices as integers)."""
    out = copy.deepcopy(spec)
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = out
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return out


def parse_and_expand(data: Any) -> list[PlannedTrial]:
    return expand(parse_spec(data))


def identity(cfg: TrialConfig) -> str:
    return json.dumps(cfg.model_dump(mode="json", exclude={"name", "output_dir"}), sort_keys=True)


def check_expansion(trials: list[PlannedTrial]) -> None:
    """The invariants every expansion must keep."""
    names_in_axis = [(t.axis, t.name) for t in trials]
    assert len(set(names_in_axis)) == len(names_in_axis), "names unique within an axis"
    by_name: dict[str, str] = {}
    by_id: dict[str, str] = {}
    for t in trials:
        assert isinstance(t.config, TrialConfig)
        assert TrialConfig.model_validate(t.config.model_dump()) == t.config  # a valid, re-loadable config
        assert t.id == t.config.config_hash()
        assert t.config.name == t.name and t.config.model.family == t.family and t.config.train.seed == t.seed
        assert by_name.setdefault(t.name, t.id) == t.id, "one name, one config"
        assert by_id.setdefault(t.id, identity(t.config)) == identity(t.config), "one id, one config"
    assert len(set(by_id.values())) == len(by_id), "distinct configs, distinct ids"


# --------------------------------------------------------------------------------------------------
# good specs


def test_good_spec_expands_to_families_x_points_x_seeds() -> None:
    trials = parse_and_expand(GOOD)
    points = 3 + 3 + 3 + 2
    assert len(trials) == 2 * points * 2
    check_expansion(trials)
    for family in ("ebt", "transformer_pp"):
        for axis in ("data", "batch", "params", "depth"):
            rows = [t for t in trials if t.family == family and t.axis == axis]
            assert {t.seed for t in rows} == {0, 1}
    ebt_lrs = {t.config.optim.lr for t in trials if t.family == "ebt"}
    tpp_lrs = {t.config.optim.lr for t in trials if t.family == "transformer_pp"}
    assert ebt_lrs == {0.0012} and tpp_lrs == {1e-3}  # family override applies to its family only


def test_axis_points_change_only_their_field() -> None:
    trials = [t for t in parse_and_expand(GOOD) if t.family == "transformer_pp" and t.seed == 0]
    by_axis = {a: [t.config for t in trials if t.axis == a] for a in ("data", "batch", "params", "depth")}
    assert [c.train.tokens for c in by_axis["data"]] == [100_000, 200_000, 400_000]
    assert {c.model.d_model for c in by_axis["data"]} == {64}
    assert [c.train.global_batch_size for c in by_axis["batch"]] == [8, 16, 32]
    assert {c.train.tokens for c in by_axis["batch"]} == {200_000}
    params = by_axis["params"]
    assert [(c.model.d_model, c.model.n_heads) for c in params] == [(64, 2), (96, 3), (128, 4)]
    assert all(c.model.d_ff is None and c.model.n_layers == 2 for c in params)  # d_ff derived
    assert [c.model.n_layers for c in by_axis["depth"]] == [2, 4]
    assert {c.model.d_model for c in by_axis["depth"]} == {64}


def test_a_batch_axis_with_steps_trains_that_many_steps_at_every_batch() -> None:
    """`steps` holds the updates fixed and lets D grow with the batch (the default holds D fixed)."""
    spec = with_value(GOOD, "axes.batch.steps", 250)
    spec = with_value(spec, "family_overrides.ebt.model", {"context_length": 32})  # each family its context
    trials = [t for t in parse_and_expand(spec) if t.axis == "batch" and t.seed == 0]
    check_expansion(trials)
    for t in trials:
        c = t.config
        assert (
            c.total_steps == 250
            and c.train.tokens == 250 * c.train.global_batch_size * c.model.context_length
        )
    assert sorted({t.config.train.tokens for t in trials if t.family == "ebt"}) == [64_000, 128_000, 256_000]
    assert len({t.name for t in trials}) == len(trials)  # D in the name tells the points apart


def test_params_and_depth_axes_with_tokens_train_every_size_at_those_tokens() -> None:
    """`tokens` on the params or depth axis replaces the base's D for that axis only; the other axes and the
    model sizes are untouched, and a size at other tokens is another trial (not the shared base point)."""
    spec = with_value(GOOD, "axes.params.tokens", 600_000)
    spec = with_value(spec, "axes.depth.tokens", 300_000)
    trials = [t for t in parse_and_expand(spec) if t.seed == 0]
    check_expansion(trials)
    base_tokens = GOOD["base"]["train"]["tokens"]
    by_axis = {a: [t.config for t in trials if t.axis == a] for a in ("params", "depth", "batch")}
    assert {c.train.tokens for c in by_axis["params"]} == {600_000}
    assert sorted({c.model.d_model for c in by_axis["params"]}) == [64, 96, 128]
    assert {c.train.tokens for c in by_axis["depth"]} == {300_000}
    assert sorted({c.model.n_layers for c in by_axis["depth"]}) == [2, 4]
    assert {c.train.tokens for c in by_axis["batch"]} == {base_tokens}
    unchanged = [t for t in parse_and_expand(GOOD) if t.seed == 0 and t.axis == "params"]
    assert {t.id for t in unchanged}.isdisjoint({t.id for t in trials if t.axis == "params"})
    with pytest.raises(ConfigError, match=r"axes\.params\.tokens"):
        parse_and_expand(with_value(GOOD, "axes.params.tokens", 0))


def test_base_point_shares_its_id_across_axes_and_is_trained_once() -> None:
    trials = parse_and_expand(GOOD)
    base = [
        t
        for t in trials
        if t.family == "ebt"
        and t.seed == 0
        and t.config.model.d_model == 64
        and t.config.model.n_layers == 2
        and t.config.train.tokens == 200_000
        and t.config.train.global_batch_size == 16
    ]
    assert sorted(t.axis for t in base) == ["batch", "data", "depth", "params"]  # one row per axis
    assert len({t.id for t in base}) == 1
    assert {t.name for t in base if t.axis != "batch"} == {"ebt-d64-L2-D200K-s0"}
    assert [t.name for t in base if t.axis == "batch"] == ["ebt-d64-L2-D200K-s0-B16"]
    unique = unique_trials(trials)
    assert len(unique) == len({t.id for t in trials}) < len(trials)
    assert len(rows_by_id(trials)[base[0].id]) == 4
    folders = {t.id: t.config.folder for t in trials}  # one trial folder per id, fixed when planned
    assert all(t.config.folder == folders[t.id] for t in trials)
    assert len(set(folders.values())) == len(folders)
    assert all(
        f.path.name.endswith(f"-{trial_id}") and f.path.parent.name == "trials"
        for trial_id, f in folders.items()
    )


def test_trial_names() -> None:
    trials = parse_and_expand(GOOD)
    names = {t.name for t in trials}
    assert "tpp-d128-L2-D200K-s1" in names and "ebt-d64-L2-D400K-s0" in names
    assert "tpp-d64-L2-D200K-s0-B32" in names
    cfg = TrialConfig.model_validate({**BASE, "train": {**BASE["train"], "tokens": 20_000_000}})
    assert trial_name(cfg, "data") == "tpp-d64-L2-D20M-s0"
    assert trial_name(cfg, "flops", 3.5e18) == "tpp-d64-L2-D20M-s0-C3.5e18"


def test_trial_names_start_with_the_registrys_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tag is the family's own (model/family_ids.py), not a copy kept by the sweep."""
    monkeypatch.setitem(expand_mod.FAMILY_IDS, "transformer_pp", replace(TRANSFORMER_PP, tag="base"))
    cfg = TrialConfig.model_validate(BASE)
    assert trial_name(cfg, "data").startswith("base-d64-L2-")


def test_log_ranges() -> None:
    spec = parse_spec(with_value(GOOD, "axes.data.tokens", {"start": 1e5, "stop": 1e6, "num": 3}))
    assert spec.axes.data is not None and spec.axes.data.tokens == [100_000, 316_228, 1_000_000]
    spec = parse_spec(with_value(FLOPS, "axes.flops.budgets", {"start": 1e12, "stop": 1e14, "num": 3}))
    assert spec.axes.flops is not None
    assert spec.axes.flops.budgets == pytest.approx([1e12, 1e13, 1e14])  # floats stay floats
    spec = parse_spec(with_value(GOOD, "axes.batch.global_batch_size", {"start": 8, "stop": 8, "num": 1}))
    assert spec.axes.batch is not None and spec.axes.batch.global_batch_size == [8]
    spec = parse_spec(with_value(GOOD, "axes.data.tokens", ["1e5", "2.5e5"]))  # YAML 1.1 strings
    assert spec.axes.data is not None and spec.axes.data.tokens == [100_000, 250_000]


def test_load_spec_yaml_floats_and_output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: y\nfamilies: [transformer_pp]\noutput_dir: runs\n"
        "base:\n  model: {d_model: 64, n_layers: 2, n_heads: 2, vocab_size: 512, context_length: 64}\n"
        "  train: {tokens: 2e5, global_batch_size: 16, micro_batch_size: 8}\n"
        "axes:\n  data: {tokens: [1e5, 2.0e5, 4.0e+5]}\n"
    )
    monkeypatch.chdir(tmp_path)
    spec = load_spec(path)
    assert spec.axes.data is not None and spec.axes.data.tokens == [100_000, 200_000, 400_000]
    assert spec.output_dir == str(tmp_path / "runs")
    trials = expand(spec)
    assert all(t.config.output_dir == str(tmp_path / "runs") for t in trials)
    assert all(
        t.config.folder.path == tmp_path / "runs" / "y" / "trials" / f"{t.name}-{t.id}" for t in trials
    )
    assert trials[0].metadata == {
        "sweep": "y",
        "axis": "data",
        "family": "transformer_pp",
        "seed": "0",
        "trial_id": trials[0].id,
        "axis_value": "100000",
    }


def test_rules_derive_lr_and_batch_from_n() -> None:
    data = with_value(FLOPS, "axes", {"params": {"d_model": [32, 64, 128], "head_dim": 16}})
    data["rules"] = {
        "lr": {"rule": "power", "ref_params": 1e5, "ref_lr": 1e-3, "exponent": -0.5},
        "batch": {"rule": "power", "ref_params": 1e5, "ref_batch": 16, "exponent": 0.5},
    }
    trials = parse_and_expand(data)
    for t in trials:
        n = count_params(t.config.model)["non_embedding"]
        assert t.config.optim.lr == pytest.approx(1e-3 * (n / 1e5) ** -0.5)
        raw = 16 * (n / 1e5) ** 0.5
        assert t.config.train.global_batch_size % 8 == 0
        assert abs(t.config.train.global_batch_size - raw) <= 4  # nearest multiple of micro x workers
    lrs = [t.config.optim.lr for t in trials]
    assert lrs == sorted(lrs, reverse=True)  # bigger model, smaller lr
    check_expansion(trials)


# --------------------------------------------------------------------------------------------------
# isoFLOP grid


def check_isoflop(trials: list[PlannedTrial], budgets: list[float], points: int) -> None:
    for budget in budgets:
        rows = [t for t in trials if t.flops_budget == budget]
        assert len(rows) == points
        assert len({t.config.model.d_model for t in rows}) == points  # distinct ladder models
        for t in rows:
            assert t.axis == "flops"
            tokens = t.config.total_steps * t.config.tokens_per_step
            assert t.config.train.tokens == tokens  # whole optimizer steps
            compute = train_flops_per_token(t.config.model) * tokens  # the family's own FLOP count
            assert abs(compute - budget) / budget < 0.01


def test_isoflop_trials_sit_on_their_budget() -> None:
    trials = parse_and_expand(FLOPS)
    check_isoflop(trials, [1e12, 3e12], 3)
    check_expansion(trials)
    # log-even in N across the feasible ladder: the extremes are the ladder's smallest and largest
    widths = sorted(t.config.model.d_model for t in trials if t.flops_budget == 3e12)
    assert widths[0] == 32 and widths[-1] == 128
    assert {t.name.rsplit("-", 1)[1] for t in trials} == {"C1e12", "C3e12"}


def test_isoflop_uses_each_familys_own_flops(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fake EBT that costs exactly 7x the Transformer++ per token, EBT trials get 1/7 of the tokens."""

    def fake_fpt(cfg):
        tpp = train_flops_per_token(cfg.model_copy(update={"family": "transformer_pp"}))
        return 7 * tpp if cfg.family == "ebt" else tpp

    def fake_params(cfg):
        return count_params(cfg.model_copy(update={"family": "transformer_pp"}))

    monkeypatch.setattr(expand_mod, "train_flops_per_token", fake_fpt)
    monkeypatch.setattr(expand_mod, "count_params", fake_params)
    data = with_value(FLOPS, "families", ["ebt", "transformer_pp"])
    data = with_value(data, "axes.flops.budgets", [1e13])
    trials = parse_and_expand(data)
    for t in trials:
        compute = fake_fpt(t.config.model) * t.config.train.tokens
        assert abs(compute - 1e13) / 1e13 < 0.01
    by = {(t.family, t.config.model.d_model): t.config.train.tokens for t in trials}
    for (family, d), tokens in by.items():
        if family == "ebt":
            assert tokens == pytest.approx(by[("transformer_pp", d)] / 7, rel=0.02)


def test_isoflop_with_the_real_ebt() -> None:
    pytest.importorskip("model.ebt")
    data = with_value(FLOPS, "families", ["ebt", "transformer_pp"])
    data = with_value(data, "axes.flops.budgets", [1e13, 3e13])
    trials = parse_and_expand(data)
    for family in ("ebt", "transformer_pp"):
        check_isoflop([t for t in trials if t.family == family], [1e13, 3e13], 3)


# --------------------------------------------------------------------------------------------------
# bad specs: every error is a SpecError naming the field, raised before anything runs

BAD = [
    # (spec, path, value, the field the message must name, part of the reason)
    (GOOD, "axes.widht", {"x": [1]}, "axes.widht", "unknown axis"),
    (GOOD, "families", ["ebt", "gpt"], "families.1", "must be one of"),
    (GOOD, "family_overrides", {"gpt": {}}, "family_overrides.gpt", "must be one of"),
    (GOOD, "families", ["transformer_pp"], "family_overrides.ebt", "not in families"),
    (GOOD, "families", [], "families", "must not be empty"),
    (GOOD, "seeds", [], "seeds", "must not be empty"),
    (GOOD, "axes.data.tokens", [], "axes.data.tokens", "must not be empty"),
    (GOOD, "axes", {}, "axes", "at least one axis"),
    (GOOD, "axes.data.tokens.1", -5, "axes.data.tokens.1", "must be > 0"),
    (GOOD, "axes.data.tokens.0", 0, "axes.data.tokens.0", "must be > 0"),
    (GOOD, "axes.data.tokens.0", 100, "axes.data.tokens.0", "less than one optimizer step"),
    (GOOD, "axes.data.tokens", {"start": 1e5, "stop": 1e6, "num": 0}, "axes.data.tokens.num", ">= 1"),
    (GOOD, "axes.data.tokens", {"start": -1, "stop": 1e6, "num": 3}, "axes.data.tokens.start", "> 0"),
    (
        GOOD,
        "axes.data.tokens",
        {"start": 1e5, "stop": 1.00001e5, "num": 3},
        "axes.data.tokens.1",
        "duplicate",
    ),
    (GOOD, "axes.data.tokens", [100_000, 100_001], "axes.data.tokens.1", "same trial name"),
    (GOOD, "base.train.tokens", 0, "base.train.tokens", "must be > 0"),
    (GOOD, "base.train.tokens", 100, "base.train.tokens", "less than one optimizer step"),
    (GOOD, "base.model", 5, "base.model", "must be a mapping"),
    (GOOD, "base.name", "x", "base.name", "set by the sweep"),
    (GOOD, "base.model.family", "ebt", "base.model.family", "families"),
    (GOOD, "family_overrides.ebt.optim.lr", -1, "family_overrides.ebt.optim.lr", "must be > 0"),
    (GOOD, "axes.params.head_dim", 24, "axes.params.d_model.0", "does not divide 64"),
    (GOOD, "axes.params.d_model.1", 80, "axes.params.d_model.1", "does not divide 80"),
    (GOOD, "axes.params.n_layers", [2, 4], "axes.params.n_layers", "one entry per d_model"),
    (GOOD, "axes.params.d_model", [64, 64], "axes.params.d_model.1", "repeats the model"),
    (GOOD, "axes.batch.global_batch_size.0", 12, "axes.batch.global_batch_size.0", "multiple of"),
    (GOOD, "axes.depth.n_layers.0", 0, "axes.depth.n_layers.0", "must be > 0"),
    (GOOD, "axes.params", {"d_model": [4, 64], "head_dim": 2}, "axes.params.d_model.0", "invalid trial"),
    (GOOD, "axes.params", {"d_model": [96], "head_dim": 3}, "axes.params.d_model.0", "must be even"),
    (GOOD, "seeds", [0, -1], "seeds.1", ">= 0"),
    (GOOD, "seeds", [1, 1], "seeds.1", "duplicate"),
    (GOOD, "name", "Bad Name", "name", "must be a name of letters, digits"),
    (GOOD, "rules", {"lr": {"rule": "powr"}}, "rules.lr", "powr"),
    (
        GOOD,
        "rules",
        {"lr": {"rule": "power", "ref_params": 1, "ref_lr": 1e-3, "exponent": 1e6}},
        "rules.lr",
        "lr=",
    ),
    (FLOPS, "axes.flops.budgets.0", -1.0, "axes.flops.budgets.0", "must be > 0"),
    (FLOPS, "axes.flops.budgets.1", 0, "axes.flops.budgets.1", "must be > 0"),
    (FLOPS, "axes.flops.budgets.0", 1e6, "axes.flops.budgets.0", "less than one optimizer step"),
    (FLOPS, "axes.flops.budgets.0", 3e10, "axes.flops.budgets.0", "only"),  # too few rungs within 1%
    (FLOPS, "axes.flops.points", 9, "axes.flops.points", "exceeds"),
    (FLOPS, "axes.flops.head_dim", 24, "axes.flops.d_model.0", "does not divide 32"),
    (FLOPS, "axes.flops.extra", 1, "axes.flops.extra", "unknown field"),
    (FLOPS, "axes.flops.lr", [1e-3] * 5, "rules.lr", "conflicts"),
]
# the last case needs a power lr rule as well
BAD[-1] = (
    with_value(
        FLOPS, "rules", {"lr": {"rule": "power", "ref_params": 1e5, "ref_lr": 1e-3, "exponent": -0.3}}
    ),
    *BAD[-1][1:],
)


@pytest.mark.parametrize(
    ("spec", "path", "value", "field", "reason"), BAD, ids=[f"{b[1]}={b[2]}" for b in BAD]
)
def test_bad_specs_name_the_field(spec: dict, path: str, value: Any, field: str, reason: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_and_expand(with_value(spec, path, value))
    message = str(err.value)
    assert f"{field}: " in message and reason in message, message
    problems = err.value.problems  # one line for one problem; else a heading and a line for each
    assert len(message.splitlines()) == (1 if len(problems) == 1 else 1 + len(problems)), message
    assert isinstance(err.value, ConfigError)
    assert any(loc == field for loc, _ in err.value.problems)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a list\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(bad)


# --------------------------------------------------------------------------------------------------
# property-based: random valid specs expand cleanly; random invalid values fail with a named SpecError


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    head_dim = draw(st.sampled_from([8, 16, 32]))
    d_model = head_dim * draw(st.integers(1, 4))
    micro = draw(st.sampled_from([1, 2, 4, 8]))
    workers = draw(st.sampled_from([1, 2]))
    gbs = micro * workers * draw(st.integers(1, 4))
    ctx = draw(st.sampled_from([16, 32, 64]))
    tps = gbs * ctx
    base = {
        "model": {
            "d_model": d_model,
            "n_layers": draw(st.integers(1, 3)),
            "n_heads": d_model // head_dim,
            "vocab_size": 512,
            "context_length": ctx,
        },
        "train": {
            "tokens": tps * draw(st.integers(1, 50)),
            "global_batch_size": gbs,
            "micro_batch_size": micro,
        },
        "deepspeed": {"zero_stage": draw(st.sampled_from([0, 1, 2, 3]))},
        "resources": {"num_workers": workers},
    }
    axes: dict[str, Any] = {}
    chosen = draw(st.sets(st.sampled_from(["data", "batch", "params", "depth"]), min_size=1))
    # token counts distinct at 3 significant digits (`si`, as trial names print them), so names stay distinct:
    # distinct multiples of tps are not enough (822 and 823 x 16 are both "13.2K")
    if "data" in chosen:
        tokens = st.integers(1, 999).map(lambda k: k * tps)
        axes["data"] = {"tokens": draw(st.lists(tokens, min_size=1, max_size=4, unique_by=si))}
    if "batch" in chosen:
        axes["batch"] = {
            "global_batch_size": draw(
                st.lists(
                    st.integers(1, 8).map(lambda k: k * micro * workers), min_size=1, max_size=4, unique=True
                )
            )
        }
        base["train"]["tokens"] = 8 * micro * workers * ctx * draw(st.integers(1, 5))
    if "params" in chosen:
        axes["params"] = {
            "d_model": draw(
                st.lists(st.integers(1, 8).map(lambda k: k * head_dim), min_size=1, max_size=4, unique=True)
            ),
            "head_dim": head_dim,
        }
    if "depth" in chosen:
        axes["depth"] = {"n_layers": draw(st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True))}
    return {
        "name": "h",
        "families": draw(st.lists(st.sampled_from(["ebt", "transformer_pp"]), min_size=1, unique=True)),
        "seeds": draw(st.lists(st.integers(0, 2**31), min_size=1, max_size=3, unique=True)),
        "base": base,
        "axes": axes,
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_random_valid_specs_expand_to_valid_unique_trials(data: dict[str, Any]) -> None:
    trials = parse_and_expand(data)
    n_points = sum(len(next(iter(v.values()))) for v in data["axes"].values())
    assert len(trials) == len(data["families"]) * n_points * len(data["seeds"])
    check_expansion(trials)
    assert [t.id for t in parse_and_expand(copy.deepcopy(data))] == [t.id for t in trials]  # stable


def _leaf_paths(data: dict[str, Any]) -> list[str]:
    """Numeric fields of a valid spec whose non-positive value is invalid."""
    paths = ["base.train.tokens", "base.train.global_batch_size", "base.model.d_model", "base.model.n_layers"]
    for axis, fields in data["axes"].items():
        for key, values in fields.items():
            if isinstance(values, list):
                paths += [f"axes.{axis}.{key}.{i}" for i in range(len(values))]
    return paths


BAD_VALUES = st.one_of(
    st.integers(max_value=0),
    st.floats(max_value=0, allow_nan=False),
    st.just(float("nan")),
    st.just(float("inf")) | st.just(-float("inf")),
    st.text(alphabet="abcxyz -", min_size=1, max_size=5),
    st.just(None),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs(), st.data())
def test_random_invalid_values_fail_with_a_spec_error_naming_the_field(data: dict[str, Any], draw) -> None:
    path = draw.draw(st.sampled_from(_leaf_paths(data)))
    value = draw.draw(BAD_VALUES)
    with pytest.raises(SpecError) as err:  # any other exception type fails the test
        parse_and_expand(with_value(data, path, value))
    assert f"{path}: " in str(err.value), (path, value, str(err.value))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs(), st.data())
def test_garbage_anywhere_is_a_spec_error_or_valid(data: dict[str, Any], draw) -> None:
    """Replace any node of a valid spec by arbitrary YAML-like data: the result is a SpecError or a valid
    expansion, never another exception."""
    paths = ["name", "families", "seeds", "base", "axes", "rules", "family_overrides", "output_dir"]
    paths += ["base." + k for k in data["base"]] + ["axes." + k for k in data["axes"]] + _leaf_paths(data)
    path = draw.draw(st.sampled_from(paths))
    mutated = with_value(data, path, draw.draw(JSONISH))
    try:
        trials = parse_and_expand(mutated)
    except SpecError as err:
        assert ": " in str(err)
        return
    check_expansion(trials)


def test_ids_are_stable_across_processes() -> None:
    code = (
        "import json, sys; from orchestrator.sweep.spec import parse_spec; "
        "from orchestrator.sweep.expand import expand; "
        "print(json.dumps([t.id for t in expand(parse_spec(json.loads(sys.argv[1])))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(GOOD)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "12345"},  # a different str-hash seed than ours
    )
    ids = [t.id for t in parse_and_expand(GOOD)]
    assert json.loads(out.stdout) == ids and len(set(ids)) < len(ids)


def test_distinct_configs_get_distinct_ids() -> None:
    trials = parse_and_expand(GOOD)
    a = trials[0].config
    for change in ({"train": {**BASE["train"], "seed": 7}}, {"optim": {"lr": 0.5}}):
        b = TrialConfig.model_validate({**a.model_dump(), **change})
        assert b.config_hash() != a.config_hash()
    assert a.model_copy(update={"name": "x", "output_dir": "/y"}).config_hash() == a.config_hash()
    assert a.model_copy(update={"trial_dir": "/y/trials/x-1"}).config_hash() == a.config_hash()


# --------------------------------------------------------------------------------------------------
# planner


def tpp_plan(zero_stage: int = 1, workers: int = 1, throughput: float | None = 1e10) -> plan_mod.Plan:
    data = with_value(GOOD, "families", ["transformer_pp"])
    del data["family_overrides"]
    data = with_value(data, "base.deepspeed.zero_stage", zero_stage)
    data = with_value(data, "base.resources", {"num_workers": workers})
    data = with_value(data, "axes.batch.global_batch_size", [8 * workers, 16 * workers, 32 * workers])
    data = with_value(data, "base.train.global_batch_size", 16 * workers)
    return plan(parse_and_expand(data), throughput_flops=throughput)


def test_plan_rows_and_totals() -> None:
    p = tpp_plan()
    assert len(p.rows) == 11 * 2
    assert p.n_trials == len({r.trial.id for r in p.rows}) < len(p.rows)
    for r in p.rows:
        cfg = r.trial.config
        assert r.steps == cfg.total_steps and r.tokens == r.steps * cfg.tokens_per_step
        assert r.flops == pytest.approx(train_flops_per_token(cfg.model) * r.tokens)
        assert r.params_total == count_params(cfg.model)["total"]
        assert r.params_non_embedding == count_params(cfg.model)["non_embedding"]
        assert r.global_batch == cfg.train.global_batch_size
        assert r.seconds == pytest.approx(r.flops / 1e10)
    assert p.total_flops == pytest.approx(sum({r.trial.id: r.flops for r in p.rows}.values()))
    assert p.total_seconds == pytest.approx(p.total_flops / 1e10)
    assert p.max_memory_bytes == max(r.memory_bytes for r in p.rows)
    assert sum(r.duplicate for r in p.rows) == len(p.rows) - p.n_trials
    d = json.loads(json.dumps(p.to_dict()))  # what `sweep plan --json` prints
    assert d["totals"]["trials"] == p.n_trials and len(d["trials"]) == len(p.rows)


def test_plan_time_unknown_without_throughput() -> None:
    trials = [r.trial for r in tpp_plan().rows[:2]]
    p = plan(trials, calibrate=False)
    assert [r.seconds for r in p.rows] == [None, None]
    assert p.total_seconds is None and p.throughput_source == "none"
    assert plan(trials, throughput_flops=2e9, calibrate=False).rows[0].seconds is not None
    with pytest.raises(SpecError, match="throughput"):
        plan(trials, throughput_flops=0)


def test_plan_calibration_is_quick_and_positive() -> None:
    rate = plan_mod.calibrate_throughput(m=128, k=64, n=128, threads=1)
    assert math.isfinite(rate) and rate > 1e6


def test_a_plan_on_another_kind_of_cpu_says_its_times_may_be_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The time model's fixed costs were fitted on one kind of CPU; a calibrated plan on another says so."""
    import torch

    trials, fitted_on = [r.trial for r in tpp_plan().rows[:1]], plan_mod.FIT_CPU_CAPABILITY
    monkeypatch.setattr(plan_mod, "FIT_CPU_CAPABILITY", torch.backends.cpu.get_cpu_capability())
    assert not any("fitted on" in n for n in plan(trials).notes)
    assert not any("fitted on" in n for n in plan(trials, throughput_flops=1e9).notes)  # a given rate: no fit
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # torch's plain kernels, on any x86 CPU
    result = cli("sweep", "plan", str(ROOT / "sweeps" / "smoke-params.yaml"), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    (note,) = [n for n in json.loads(result.stdout)["notes"] if "fitted on" in n]
    assert f"fitted on an {fitted_on} CPU" in note and "DEFAULT kernels" in note


def test_memory_per_zero_stage() -> None:
    n, w = 1_000_000, 4
    stages = [model_state_bytes(n, s, w) for s in range(4)]
    assert stages == [16 * n, (8 + 8 / w) * n, (4 + 12 / w) * n, 16 * n / w]
    assert stages == sorted(stages, reverse=True)
    assert all(model_state_bytes(n, s, 1) == 16 * n for s in range(4))  # nothing to shard over
    assert model_state_bytes(n, 0, 1, "bf16") == 16 * n and model_state_bytes(n, 1, 2, "bf16") == 10 * n
    # in the planner: the same trials need less memory per worker at every higher stage (4 workers)
    per_stage = [[r.memory_bytes for r in tpp_plan(stage, workers=4).rows] for stage in range(4)]
    for lower, higher in itertools.pairwise(per_stage):
        assert all(h < lo for h, lo in zip(higher, lower, strict=True))
    # and more with a bigger micro-batch (activations) or a bigger model
    cfg = tpp_plan().rows[0].trial.config
    bigger_micro = cfg.model_copy(update={"train": cfg.train.model_copy(update={"micro_batch_size": 16})})
    assert memory_per_worker(bigger_micro) > memory_per_worker(cfg)
    wider = cfg.model_copy(update={"model": cfg.model.model_copy(update={"d_model": 128, "n_heads": 4})})
    assert memory_per_worker(wider) > memory_per_worker(cfg)


def test_ebt_needs_more_activation_memory() -> None:
    cfg = tpp_plan().rows[0].trial.config
    ebt = cfg.model_copy(update={"model": cfg.model.model_copy(update={"family": "ebt"})})
    n = 100_000  # same parameter count: compare activations only
    assert memory_per_worker(ebt, n) - memory_per_worker(cfg, n) == pytest.approx(
        plan_mod.activation_bytes(ebt) - plan_mod.activation_bytes(cfg)
    )
    assert plan_mod.activation_bytes(ebt) > 3 * plan_mod.activation_bytes(cfg)  # 2S sequence x 2 steps


def test_budget_caps() -> None:
    p = tpp_plan()
    check_budget(
        p, max_flops=p.total_flops, max_trials=p.n_trials
    )  # at the cap: fine (shared rows count once)
    with pytest.raises(SpecError, match="max_flops"):
        check_budget(p, max_flops=p.total_flops * 0.99)
    with pytest.raises(SpecError, match="max_trials"):
        check_budget(p, max_trials=p.n_trials - 1)


def test_render_plan() -> None:
    p = tpp_plan()
    table = render_plan(p)
    assert table.row_count == len(p.rows) + 1  # + totals
    text = plan_text(p)
    assert all(r.trial.name in text for r in p.rows)
    assert f"total: {p.n_trials} trials" in text and f"{p.total_flops:.3g}" in text


# --------------------------------------------------------------------------------------------------
# shipped specs


def test_there_is_a_demo_a_smoke_and_a_paper_spec_per_axis() -> None:
    names = {p.stem for p in SWEEPS}
    assert "demo" in names
    assert {f"smoke-{a}" for a in AXES} <= names and {f"paper-{a}" for a in AXES} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_shipped_specs_load_and_expand(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    if "ebt" in spec.families and spec.axes.flops is not None:
        pytest.importorskip("model.ebt")
    trials = expand(spec)
    check_expansion(trials)
    assert {t.family for t in trials} == {"ebt", "transformer_pp"}
    if path.stem.startswith("paper-"):
        for t in trials:
            c = t.config
            assert c.model.context_length == 256 and c.data.tokenizer == "EleutherAI/gpt-neox-20b"
            assert c.deepspeed.zero_stage == 2 and c.deepspeed.precision == "bf16"
            assert c.resources.gpus_per_worker == 1
            if t.axis != "batch":
                assert c.train.global_batch_size == 256
    else:
        assert all(
            t.config.data.source == "stdlib" and t.config.resources.gpus_per_worker == 0 for t in trials
        )


def _paper_sizes() -> set[tuple[int, int, int, float]]:
    return {
        (128, 2, 2, 2.4e-3),
        (256, 4, 4, 1.8e-3),
        (384, 6, 6, 1.2e-3),
        (384, 12, 6, 9e-4),
        (768, 12, 12, 6e-4),
        (1024, 24, 16, 3e-4),
        (1536, 24, 16, 2.5e-4),
        (2048, 24, 32, 2e-4),
    }


def test_paper_params_spec_uses_the_papers_sizes_and_lrs() -> None:
    trials = expand(load_spec(ROOT / "sweeps" / "paper-params.yaml"))
    sizes = {
        (c.model.d_model, c.model.n_layers, c.model.n_heads, c.optim.lr) for c in (t.config for t in trials)
    }
    assert sizes == _paper_sizes()


@pytest.mark.parametrize("stem", ["demo", *[f"smoke-{a}" for a in AXES]])
def test_cpu_specs_are_small(stem: str) -> None:
    pytest.importorskip("model.ebt")
    p = plan(expand(load_spec(ROOT / "sweeps" / f"{stem}.yaml")), calibrate=False)
    assert p.total_flops <= 2.5e12 and p.n_trials <= 12
    if stem == "demo":
        assert p.total_flops <= 2e12
        axes = {r.trial.axis for r in p.rows}
        assert len(axes) == 1 and all(
            sum(r.trial.family == f for r in p.rows) >= 4 for f in ("ebt", "transformer_pp")
        )  # one power-law fit per family
        for r in p.rows:
            m = r.trial.config.model
            assert (
                32 <= m.d_model <= 64 and m.n_layers <= 2 and m.context_length == 64 and m.vocab_size == 512
            )


def test_the_study_spec_plans_five_axes_of_six_x_over_8x_with_its_seeds() -> None:
    """sweeps/study.yaml (`make study`): every axis for both families, at least 6 distinct x spanning 8x
    (depth 4x) as the analysis fits them, 2 seeds of every configuration (the hour allows no third: the
    spec says why), per-size tuning, the shipped corpus, and a planned training time that fits the hour."""
    pytest.importorskip("model.ebt")
    spec = load_spec(ROOT / "sweeps" / "study.yaml")
    assert spec.seeds == [0, 1] and spec.tune is not None and spec.tune.max_concurrent == 1
    p = plan(expand(spec))
    x_of = {  # the x the analysis fits each axis against (analysis/data.py AXIS_X; flops: the budget)
        "data": lambda r: r.tokens,
        "batch": lambda r: r.global_batch,
        "params": lambda r: r.params_non_embedding,
        "depth": lambda r: r.trial.config.model.n_layers,
        "flops": lambda r: r.trial.flops_budget,
    }
    assert {r.trial.axis for r in p.rows} == set(AXES)
    for axis, x in x_of.items():
        for family in ("ebt", "transformer_pp"):
            rows = [r for r in p.rows if r.trial.axis == axis and r.trial.family == family]
            xs = {x(r) for r in rows}
            assert len(xs) >= 6 and max(xs) / min(xs) >= (4 if axis == "depth" else 8), (axis, sorted(xs))
            configs = {(x(r), r.trial.config.model.d_model) for r in rows}
            for config in configs:  # every configuration in both seeds
                assert {r.trial.seed for r in rows if (x(r), r.trial.config.model.d_model) == config} == {
                    0,
                    1,
                }
    assert all(r.trial.config.data.source == "stdlib" and r.trial.config.model.d_model >= 32 for r in p.rows)
    assert p.total_seconds is not None and p.total_seconds / 2 < 35 * 60  # two trials at a time, planned


# --------------------------------------------------------------------------------------------------
# CLI


def tpp_spec(tmp_path: Path) -> Path:
    data = with_value(GOOD, "families", ["transformer_pp"])
    del data["family_overrides"]
    data["output_dir"] = str(tmp_path / "out")
    return write_yaml(tmp_path / "spec.yaml", data)


def test_cli_plan_prints_a_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(sweep_app, ["plan", str(tpp_spec(tmp_path)), "--throughput", "1e10"])
    assert result.exit_code == 0, result.output
    assert "tpp-d64-L2-D200K-s0" in result.stdout and "total: 16 trials" in result.stdout
    assert "1e+10 FLOP/s per worker (given)" in result.stdout


def test_cli_plan_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        sweep_app, ["plan", str(tpp_spec(tmp_path)), "--throughput", "1e10", "--json"]
    )
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["totals"]["trials"] == 16 and d["totals"]["rows"] == 22  # base point: 4 rows, 1 trial


def test_cli_plan_bad_spec_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "spec.yaml", with_value(GOOD, "axes.data.tokens.1", -5))
    result = CliRunner().invoke(sweep_app, ["plan", str(path)])
    assert result.exit_code == 2
    assert "axes.data.tokens.1: must be > 0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_plan_missing_file_and_caps(tmp_path: Path) -> None:
    result = CliRunner().invoke(sweep_app, ["plan", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: not found"
    args = ["plan", str(tpp_spec(tmp_path)), "--throughput", "1e10"]
    result = CliRunner().invoke(sweep_app, [*args, "--max-trials", "15"])
    assert result.exit_code == 2 and "max_trials" in result.stderr
    result = CliRunner().invoke(sweep_app, [*args, "--max-flops", "1e6"])
    assert result.exit_code == 2 and "max_flops" in result.stderr
    result = CliRunner().invoke(sweep_app, [*args, "--max-trials", "16", "--max-flops", "1e20"])
    assert result.exit_code == 0


def test_cli_help() -> None:
    result = CliRunner().invoke(sweep_app, ["plan", "--help"])
    assert result.exit_code == 0 and "--max-flops" in result.stdout and "--throughput" in result.stdout
    assert isinstance(parse_spec(GOOD), SweepSpec)


def test_gpu_trials_get_no_cpu_calibrated_time() -> None:
    pytest.importorskip("model.ebt")
    trials = expand(load_spec(ROOT / "sweeps" / "paper-depth.yaml"))
    p = plan(trials)
    if not any("GPU trials" in n for n in p.notes):  # a CUDA machine calibrates its GPU instead
        assert all(r.seconds is not None for r in p.rows)
        return
    assert all(r.seconds is None for r in p.rows) and p.total_seconds is None
    assert all(r.memory_bytes < 80 * 2**30 for r in p.rows)  # the paper's sizes fit an 80 GB GPU
    assert plan(trials, throughput_flops=1e14).total_seconds == pytest.approx(p.total_flops / 8e14)


def test_the_paper_study_plans_the_five_paper_axes_with_flops_gpu_hours_and_memory() -> None:
    """sweeps/paper-study.yaml is the five paper-* specs in one: the same trials (their shared base point
    trained once), planned with a throughput to FLOPs, GPU-hours and each trial's memory per worker."""
    pytest.importorskip("model.ebt")
    path = ROOT / "sweeps" / "paper-study.yaml"
    result = CliRunner().invoke(sweep_app, ["plan", str(path), "--throughput", "1.5e14", "--json"])
    assert result.exit_code == 0, result.output
    totals, rows = json.loads(result.stdout)["totals"], json.loads(result.stdout)["trials"]
    parts = [
        plan(expand(load_spec(ROOT / "sweeps" / f"paper-{a}.yaml")), throughput_flops=1.5e14) for a in AXES
    ]
    distinct = {r.trial.id: r for p in parts for r in p.unique_rows}
    assert {r["axis"] for r in rows} == set(AXES) and totals["rows"] == sum(len(p.rows) for p in parts)
    assert totals["trials"] == len(distinct) < totals["rows"]  # the base point is one trial on four axes
    assert totals["flops"] == pytest.approx(sum(r.flops for r in distinct.values()))
    gpu_hours = sum(r.seconds * 8 for r in distinct.values()) / 3600  # 8 workers of one GPU each
    assert totals["gpu_hours"] == pytest.approx(gpu_hours) and gpu_hours > 1000
    assert all(0 < r["memory_bytes_per_worker"] < 80 * 2**30 for r in rows)  # each fits an 80 GB GPU
    p = plan(expand(load_spec(path)), throughput_flops=1.5e14)
    assert f"{p.gpu_hours:.3g} GPU-hours" in plan_text(p)
    if not any("GPU trials" in n for n in plan(expand(load_spec(path))).notes):
        return  # a CUDA machine calibrates its GPU: the time is known
    assert "GPU-hours ? (no time estimate)" in plan_text(plan(expand(load_spec(path))))


DRIVER_IMPORTS = """
import sys
from orchestrator import cli, ports  # what `ebtscale sweep run` loads
from orchestrator.cli import sweep as sweep_cli
from orchestrator.sweep import results, runner
from orchestrator.sweep.plan import check_budget, plan
from orchestrator.sweep.expand import expand
from orchestrator.sweep.spec import load_spec

units = runner.trial_units(expand(load_spec(sys.argv[1])))
check_budget(plan([r for u in units for r in u.rows], calibrate=False, throughput_flops=1.0))
print(sorted(runner.unit_flops(u) for u in units)[-1] > 0)
runner.init_ray(None, {}, dashboard=False)  # the embedded Ray's start, as run_sweep does it
import ray

ray.shutdown()
heavy = [m for m in ("torch", "deepspeed") if m in sys.modules]
assert not heavy, f"the sweep driver imported {heavy}"
"""


def test_the_sweep_driver_plans_without_torch() -> None:
    """The driver's start-up is on every sweep's critical path: parsing, planning, scheduling order and
    starting Ray need no torch (importing it cost ~0.8 s of CPU there, and ~1 s more at exit)."""
    spec = ROOT / "sweeps" / "smoke-params.yaml"
    proc = subprocess.run([sys.executable, "-c", DRIVER_IMPORTS, str(spec)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_cli_prints_several_problems_one_per_line(tmp_path: Path) -> None:
    """Two problems of one spec: the first line says which file, then one line each, nothing run together."""
    bad = write_yaml(tmp_path / "bad.yaml", {**GOOD, "name": "Bad Name", "families": ["ebt", "foo"]})
    result = CliRunner().invoke(sweep_app, ["plan", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: invalid {bad}:", lines
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["name", "families.1"], lines


def test_limits_hold_whatever_form_the_input_takes() -> None:
    """An axis' points are capped as a list as well as a range, and the product of families, points and
    seeds (and of a tuning stage's samples) is capped too: each refused in a second, naming the field,
    where a 100,000-value list used to run for 48 s and 1.3 GB before failing on a name clash."""
    import time

    from orchestrator.sweep.spec import MAX_AXIS_POINTS, MAX_PLANNED_ROWS, planned_rows_bound

    too_many = list(range(1000, 1000 + 100 * (MAX_AXIS_POINTS + 1), 100))
    start = time.monotonic()
    cases = {
        "axes.data.tokens": with_value(GOOD, "axes.data.tokens", too_many),
        "axes.params.d_model": with_value(GOOD, "axes.params.d_model", [64] * (MAX_AXIS_POINTS + 1)),
        "axes.data.tokens.num": with_value(
            GOOD, "axes.data.tokens", {"start": 1e5, "stop": 1e9, "num": MAX_AXIS_POINTS + 1}
        ),
        "seeds": with_value(GOOD, "seeds", list(range(MAX_AXIS_POINTS + 1))),
        "axes": with_value(GOOD, "seeds", list(range(MAX_PLANNED_ROWS // 20))),  # 2 x 11 points x 1000
    }
    for field, data in cases.items():
        with pytest.raises(SpecError) as err:
            parse_spec(data)
        assert field in {loc for loc, _ in err.value.problems}, (field, str(err.value))
    tuned = with_value(
        GOOD, "tune", {"num_samples": 1000, "space": {"ebt": {"lr": {"loguniform": [1e-4, 1e-2]}}}}
    )
    with pytest.raises(SpecError) as err:
        parse_spec(with_value(tuned, "seeds", list(range(10))))
    assert "tune.num_samples" in {loc for loc, _ in err.value.problems}, str(err.value)
    assert time.monotonic() - start < 30
    assert planned_rows_bound(parse_spec(GOOD)) == 2 * (3 + 3 + 3 + 2) * 2  # the bound counts every row
    assert len(parse_and_expand(GOOD)) <= planned_rows_bound(parse_spec(GOOD))


@pytest.mark.parametrize("width", [80, 120])
def test_the_plan_fits_the_terminal_with_no_number_cut(width: int) -> None:
    """At 80 and 120 columns: no line wider than the terminal, every number of every row printed whole
    (they were cut to '1…' at 80), the columns left out named in the caption; with no width, all columns."""
    from rich.console import Console

    from orchestrator.sweep.plan import _COLUMNS, _cells, plan, plan_columns, render_plan

    planned = plan(parse_and_expand(GOOD), throughput_flops=1e10)
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_plan(planned, width=width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    shown = plan_columns(planned, width)
    numbers = ("N (non-emb)", "N total", "D", "C (FLOPs)", "steps", "batch", "mem/worker", "time")
    for row in planned.rows:
        cells = dict(zip(_COLUMNS, _cells(row), strict=True))
        for col in numbers:
            if col in shown:
                assert f" {cells[col]} " in text, (col, cells[col])
    left_out = [c for c in _COLUMNS if c not in shown]
    if width == 80:
        assert left_out  # 12 columns do not fit 80
    assert all(c in " ".join(text.split()) for c in left_out), left_out  # named in the caption
    assert {"trial", "D", "C (FLOPs)", "time"} <= set(shown)
    assert plan_columns(planned, None) == list(_COLUMNS)  # --wide


NAMEISH = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["..", ".", "../x", "a/../../b", "/abs", "~", "x\x00y", "a b", "-x", "A_1.b-2", "tpp"]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_specs(), name=NAMEISH, out=st.sampled_from(["", "sub", "../up", "a/b/../c"]))
def test_any_sweep_name_is_refused_or_stays_inside_its_output_folder(
    data: dict[str, Any], name: str, out: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever the sweep's name and output_dir: a SpecError naming `name`, or every planned trial's folder
    one level inside `<output_dir>/<name>/trials`; nothing else is raised and nothing is written."""
    root = tmp_path_factory.mktemp("names")
    output_dir = (root / out).resolve()
    try:
        trials = parse_and_expand({**data, "name": name, "output_dir": str(output_dir)})
    except SpecError as err:
        assert "name" in {loc for loc, _ in err.problems}, str(err)
        return
    trials_dir = output_dir / name / "trials"
    assert trials_dir.resolve().parent.parent == output_dir  # the name is one folder
    for t in trials:
        assert Path(t.config.trial_dir).parent == trials_dir.resolve(), t.config.trial_dir
    assert list(root.iterdir()) == []
