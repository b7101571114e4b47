"""Expanding a sweep spec (spec.py, the schema) into fully resolved trials: families x axes x points x seeds,
with the lr/batch rules, the isoFLOP grids and the tuning stage's values applied, each trial named and placed.

Identity: a trial's id is `TrialConfig.config_hash()` of its resolved config (seed included via train.seed),
so the same configuration reached from two axes (typically the base point) has one id; it stays one row per
axis (each axis is its own fit) and `unique_trials` gives what the orchestrator trains, once per id.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, overload

from pydantic import ValidationError

from model.family import count_params, train_flops_per_token
from model.family_ids import FAMILY_IDS
from orchestrator.config import PLACEMENT_FIELDS, ConfigError, TrialConfig, deep_merge
from orchestrator.sweep.lr_law import power
from orchestrator.sweep.spec import (
    ISOFLOP_TOLERANCE,
    MAX_BATCH,
    AxisPoint,
    FixedRule,
    FlopsAxis,
    PowerBatchRule,
    PowerLrRule,
    SpecError,
    SweepSpec,
    axis_points,
    field_path,
    trial_dict,
    validation_problems,
)
from orchestrator.sweep.tune_space import Tuned, TunedValues, knob_patch, size_key


@dataclass(frozen=True)
class TrialCosts:
    """A planned trial's size and compute, counted once when it is planned (the family's own counts:
    model/family.py), for whatever needs them later: the plan, the schedule order, the tuning stage."""

    params_total: int
    params_non_embedding: int  # Kaplan's N
    train_flops_per_token: float  # the study's convention (model/flops.py)
    tokens: int  # what training consumes: whole optimizer steps

    @property
    def train_flops(self) -> float:
        return self.train_flops_per_token * self.tokens

    @classmethod
    def of(cls, cfg: TrialConfig) -> TrialCosts:
        params = count_params(cfg.model)
        return cls(
            params_total=params["total"],
            params_non_embedding=params["non_embedding"],
            train_flops_per_token=train_flops_per_token(cfg.model),
            tokens=cfg.total_steps * cfg.tokens_per_step,
        )


@dataclass(frozen=True)
class PlannedTrial:
    """One row of the sweep: a resolved config plus where it sits in the study.

    `id` is the config hash (shared by rows that resolve to the same config, e.g. the base point on several
    axes); `name` is unique per (axis, config). `axis_value` is the swept spec value (tokens, batch size,
    d_model, n_layers; d_model for flops), `source` the spec entry it came from."""

    id: str
    name: str
    sweep: str
    family: str
    axis: str
    seed: int
    axis_value: float
    flops_budget: float | None
    source: str
    shape: str  # the name without the family (`trial_shape`)
    config: TrialConfig
    costs: TrialCosts
    tuned: Tuned | None = None  # values from the spec's tuning stage (tuning.json), if any

    @property
    def metadata(self) -> dict[str, str]:
        """String tags for the tracker (MLflow) and the analysis."""
        tags = {
            "sweep": self.sweep,
            "axis": self.axis,
            "family": self.family,
            "seed": str(self.seed),
            "trial_id": self.id,
            "axis_value": f"{self.axis_value:g}",
        }
        if self.flops_budget is not None:
            tags["flops_budget"] = f"{self.flops_budget:g}"
        return tags


def si(n: float) -> str:
    """200000 -> '200K', 2.5e9 -> '2.5B' (3 significant digits): short enough for trial names."""
    n = float(f"{n:.3g}")  # round first, so 999_948_288 becomes '1B', not '1e+03M'
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def budget_tag(c: float) -> str:
    """1e12 -> '1e12', 3.5e18 -> '3.5e18' (3 significant digits)."""
    mantissa, exponent = f"{c:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def trial_shape(cfg: TrialConfig, axis: str, flops_budget: float | None = None) -> str:
    """A trial's name without its family, `d256-L6-D20M-s0` (+ `-B32` on the batch axis, `-C1e18` on the
    flops axis): rows of two families with the same shape are twins (compared at equal forward passes)."""
    m = cfg.model
    shape = f"d{m.d_model}-L{m.n_layers}-D{si(cfg.train.tokens)}-s{cfg.train.seed}"
    if axis == "batch":
        shape += f"-B{cfg.train.global_batch_size}"
    if axis == "flops" and flops_budget is not None:
        shape += f"-C{budget_tag(flops_budget)}"
    return shape


def trial_name(cfg: TrialConfig, axis: str, flops_budget: float | None = None) -> str:
    """`ebt-d256-L6-D20M-s0`: the family's tag (`FamilyId.tag`, model/family_ids.py) and `trial_shape`, so
    that rows of different axes with different configs cannot share a name."""
    return _tagged(cfg.model.family, trial_shape(cfg, axis, flops_budget))


def _tagged(family: str, shape: str) -> str:
    return f"{FAMILY_IDS[family].tag}-{shape}"


def _resolve(
    spec: SweepSpec,
    family: str,
    point: AxisPoint,
    seed: int,
    extra: dict[str, Any] | None = None,
    tuned: TunedValues | None = None,
) -> tuple[TrialConfig, Tuned | None]:
    """base < override < point < extra < tuned (< rules). Raises SpecError naming the point for any invalid
    result. Returns the config and the tuned values it got, if any."""
    data = trial_dict(spec, family, point.patch, seed)
    if extra:
        data = deep_merge(data, extra)
    try:
        cfg = TrialConfig.model_validate(data)
        got = None
        if tuned is not None:
            n = count_params(cfg.model)["non_embedding"]
            got = tuned.for_trial(family, cfg.model.d_model, cfg.model.n_layers, n)
            if got is not None:
                data = deep_merge(data, knob_patch(got.values))
                cfg = TrialConfig.model_validate(data)
        rule_patch = _rule_patch(spec, cfg, point)
        return (TrialConfig.model_validate(deep_merge(data, rule_patch)) if rule_patch else cfg), got
    except ValidationError as err:
        reasons = "; ".join(validation_problems(err))
        raise SpecError(
            [(field_path(point.loc), f"{point.value} gives an invalid {family} trial: {reasons}")]
        ) from None


def _rule_patch(spec: SweepSpec, cfg: TrialConfig, point: AxisPoint) -> dict[str, Any]:
    lr_rule, batch_rule = spec.rules.lr, spec.rules.batch
    if isinstance(lr_rule, FixedRule) and (isinstance(batch_rule, FixedRule) or point.axis == "batch"):
        return {}
    n = count_params(cfg.model)["non_embedding"]
    patch: dict[str, Any] = {}
    if isinstance(lr_rule, PowerLrRule):
        lr = lr_rule.law.at(n)
        if not (math.isfinite(lr) and lr > 0):
            raise SpecError([("rules.lr", f"gives lr={lr} for N={n} at {field_path(point.loc)}")])
        patch["optim"] = {"lr": lr}
    if isinstance(batch_rule, PowerBatchRule) and point.axis != "batch":
        multiple = cfg.train.micro_batch_size * cfg.resources.num_workers
        raw = batch_rule.ref_batch * power(n / batch_rule.ref_params, batch_rule.exponent)
        if not (math.isfinite(raw) and raw <= MAX_BATCH):
            raise SpecError(
                [("rules.batch", f"gives global_batch_size={raw:g} for N={n} at {field_path(point.loc)}")]
            )
        patch["train"] = {"global_batch_size": max(1, math.floor(raw / multiple + 0.5)) * multiple}
    return patch


def _planned(
    spec: SweepSpec, cfg: TrialConfig, point: AxisPoint, budget: float | None, tuned: Tuned | None = None
) -> PlannedTrial:
    trial_id = cfg.config_hash()
    shape = trial_shape(cfg, point.axis, budget)
    name = _tagged(cfg.model.family, shape)
    src = field_path(point.loc) if budget is None else f"{field_path(point.loc)}@{budget_tag(budget)}"
    return PlannedTrial(
        id=trial_id,
        name=name,
        sweep=spec.name,
        family=cfg.model.family,
        axis=point.axis,
        seed=cfg.train.seed,
        axis_value=point.value,
        flops_budget=budget,
        source=src,
        shape=shape,
        config=cfg.model_copy(update={"name": name, "output_dir": spec.output_dir}),
        costs=TrialCosts.of(cfg),
        tuned=tuned,
    )


def _place(spec: SweepSpec, trials: list[PlannedTrial]) -> list[PlannedTrial]:
    """Every row's trial folder, fixed here once: one folder per id (trained once), named after the id's
    first row, `<output_dir>/<sweep>/trials/<name>-<id>`."""
    folders: dict[str, str] = {}
    placed = []
    for t in trials:
        folder = folders.setdefault(t.id, str(spec.folder.trial(t.name, t.id).path))
        placed.append(replace(t, config=t.config.model_copy(update={"trial_dir": folder})))
    return placed


def _isoflop(spec: SweepSpec, family: str, tuned: TunedValues | None) -> Iterator[PlannedTrial]:
    """Per budget: the feasible rungs (>= 1 step and within 1% after rounding to whole steps), then `points`
    of them nearest to log-even targets in N between the smallest and largest feasible N."""
    ax: FlopsAxis = spec.axes.flops  # type: ignore[assignment]
    rungs = []
    for point in axis_points(spec, family, "flops"):
        cfg, _ = _resolve(spec, family, point, spec.seeds[0], tuned=tuned)
        costs = TrialCosts.of(cfg)
        per_step = costs.train_flops_per_token * cfg.tokens_per_step
        rungs.append((point, costs.params_non_embedding, per_step, cfg.tokens_per_step))
    cheapest = min(rungs, key=lambda r: r[2])
    for i, budget in enumerate(ax.budgets):
        loc = f"axes.flops.budgets.{i}"
        if budget < cheapest[2]:
            raise SpecError(
                [
                    (
                        loc,
                        f"{budget:g} FLOPs is less than one optimizer step of the smallest {family} "
                        f"model (d_model {cheapest[0].value}: {cheapest[2]:.3g} FLOPs per step)",
                    )
                ]
            )
        feasible = []
        for point, n, per_step, tps in rungs:
            steps = math.floor(budget / per_step + 0.5)
            if steps >= 1 and abs(steps * per_step - budget) / budget < ISOFLOP_TOLERANCE:
                feasible.append((n, point, steps * tps))
        if len(feasible) < ax.points:
            raise SpecError(
                [
                    (
                        loc,
                        f"{budget:g} FLOPs: only {len(feasible)} of the ladder's {family} models can "
                        f"sit within {ISOFLOP_TOLERANCE:.0%} of it in whole optimizer steps "
                        f"(points = {ax.points}); raise the budget or lower points",
                    )
                ]
            )
        for _n, point, tokens in sorted(_pick_log_even(feasible, ax.points), key=lambda f: f[0]):
            for seed in spec.seeds:
                cfg, got = _resolve(spec, family, point, seed, {"train": {"tokens": tokens}}, tuned)
                yield _planned(spec, cfg, point, budget, got)


def _pick_log_even(candidates: list[tuple[int, AxisPoint, int]], k: int) -> list[tuple[int, AxisPoint, int]]:
    """The k distinct candidates nearest (in log N) to k log-evenly spaced targets across their N range."""
    lo = math.log(min(c[0] for c in candidates))
    hi = math.log(max(c[0] for c in candidates))
    targets = [lo + (hi - lo) * i / (k - 1) for i in range(k)] if k > 1 else [(lo + hi) / 2]
    left = list(candidates)
    chosen = []
    for t in targets:
        best = min(left, key=lambda c: (abs(math.log(c[0]) - t), c[0]))
        chosen.append(best)
        left.remove(best)
    return chosen


@dataclass(frozen=True)
class Expansion(Sequence[PlannedTrial]):
    """What `expand` computed: the planned rows, in order (it is their sequence), and for a spec with a
    tune: block the tuning stage's state, found on the way, so that no caller expands again to learn it."""

    trials: tuple[PlannedTrial, ...]
    tuning: TuningState | None = None

    @overload
    def __getitem__(self, index: int) -> PlannedTrial: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[PlannedTrial, ...]: ...
    def __getitem__(self, index: int | slice) -> PlannedTrial | tuple[PlannedTrial, ...]:
        return self.trials[index]

    def __len__(self) -> int:
        return len(self.trials)


def expand(spec: SweepSpec) -> Expansion:
    """families x axes x points x seeds, fully resolved, with the tuning stage's values when the spec has a
    `tune:` block and its search is complete (`tuning_state`). Raises SpecError for budgets that cannot be
    met, rules that run away, and name clashes (a name must always mean the same config)."""
    trials = _expand(spec, None)
    if spec.tune is None:
        return Expansion(tuple(trials))
    state = tuning_state(spec, trials)
    if state.values is not None:
        trials = _expand(spec, state.values)
    return Expansion(tuple(trials), state)


def _expand(spec: SweepSpec, tuned: TunedValues | None) -> list[PlannedTrial]:
    trials: list[PlannedTrial] = []
    for family in spec.families:
        for axis in spec.axes.present():
            if axis == "flops":
                trials += list(_isoflop(spec, family, tuned))
                continue
            for point in axis_points(spec, family, axis):
                for seed in spec.seeds:
                    cfg, got = _resolve(spec, family, point, seed, tuned=tuned)
                    trials.append(_planned(spec, cfg, point, None, got))
    _check_identities(trials)
    return _place(spec, trials)


AXIS_FIELDS: dict[str, str] = {"data": "tokens", "batch": "global_batch_size"}  # what an extra x sets


def extra_trial(
    spec: SweepSpec, family: str, axis: str, value: int, seed: int, tuned: TunedValues | None
) -> PlannedTrial:
    """A trial the spec does not plan, planned as `expand` plans its own (name, id, tuned values, folder):
    one more value on the data or batch axis, or another seed (`sweep extend`). Raises SpecError if the
    value gives an invalid trial."""
    ax = getattr(spec.axes, axis)
    one = ax.model_copy(update={AXIS_FIELDS[axis]: [int(value)]})
    point = axis_points(
        spec.model_copy(update={"axes": spec.axes.model_copy(update={axis: one})}), family, axis
    )[0]
    point = replace(point, loc=("adaptive", axis, AXIS_FIELDS[axis]))
    cfg, got = _resolve(spec, family, point, seed, tuned=tuned)
    return _place(spec, [_planned(spec, cfg, point, None, got)])[0]


# ---------------------------------------------------------------------------------------------------------
# the tuning stage's sizes and state (the search: tuning.py)


@dataclass(frozen=True)
class TuningState:
    """Where a spec's tuning stage stands. `sizes`: size key -> the config a tuning trial of that size starts
    from (the spec's base with the size's model); `status`: "complete" (tuning.json answers this spec's
    question: `values`), "missing" (no finished search) or "stale" (tuning.json answers another question)."""

    sizes: dict[str, TrialConfig]
    fingerprint: str
    status: str
    values: TunedValues | None
    path: Path


def tuning_state(spec: SweepSpec, untuned: list[PlannedTrial] | None = None) -> TuningState:
    """The sizes to tune (distinct family x d_model x n_layers of the sweep, filtered by `tune.sizes`) and
    whether tuning.json holds this spec's answer."""
    tune = spec.tune
    if tune is None:
        raise ConfigError(f"sweep spec {spec.name} has no tune: block")
    sizes: dict[str, TrialConfig] = {}
    for t in untuned if untuned is not None else _expand(spec, None):
        m = t.config.model
        if t.family not in tune.space or (tune.sizes != "all" and m.d_model not in tune.sizes):
            continue
        key = size_key(t.family, m.d_model, m.n_layers)
        if key not in sizes:
            model = t.config.model.model_dump(mode="json")
            data = trial_dict(spec, t.family, {"model": model}, spec.seeds[0])
            sizes[key] = TrialConfig.model_validate(data)
    fingerprint = tune.fingerprint(
        {k: c.model_dump(mode="json", exclude=PLACEMENT_FIELDS) for k, c in sorted(sizes.items())}
    )
    path = spec.folder.tuning_file
    values = TunedValues.load(path)
    if values is None:
        return TuningState(sizes, fingerprint, "missing", None, path)
    if values.fingerprint != fingerprint:
        return TuningState(sizes, fingerprint, "stale", None, path)
    return TuningState(sizes, fingerprint, "complete", values, path)


def _check_identities(trials: list[PlannedTrial]) -> None:
    """Within an axis, names and ids are unique; across axes, one name always means one config."""
    in_axis: dict[tuple[str, str], PlannedTrial] = {}
    by_name: dict[str, PlannedTrial] = {}
    for t in trials:
        where = t.source.split("@")[0]
        for key, what in (((t.axis, t.name), "trial name"), ((t.axis, t.id), "config")):
            other = in_axis.setdefault(key, t)
            if other is not t:
                msg = f"gives the same {what} as {other.source} ({t.name}); make the points distinguishable"
                raise SpecError([(where, msg)])
        other = by_name.setdefault(t.name, t)
        if other.id != t.id:
            diff = _first_difference(other.config, t.config)
            raise SpecError(
                [
                    (
                        where,
                        f"trial name {t.name} is also used by {other.source} for a different "
                        f"config (differs in {diff}); make the points distinguishable",
                    )
                ]
            )


def _first_difference(a: TrialConfig, b: TrialConfig) -> str:
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    fa, fb = (
        flat(a.model_dump(exclude=PLACEMENT_FIELDS)),
        flat(b.model_dump(exclude=PLACEMENT_FIELDS)),
    )
    return ", ".join(k for k in fa if fa[k] != fb.get(k)) or "?"


def unique_trials(trials: list[PlannedTrial]) -> list[PlannedTrial]:
    """What the orchestrator trains: the first row of every id (other rows reuse its results)."""
    out: dict[str, PlannedTrial] = {}
    for t in trials:
        out.setdefault(t.id, t)
    return list(out.values())


def rows_by_id(trials: list[PlannedTrial]) -> dict[str, list[PlannedTrial]]:
    """id -> every row that shares it (one per axis it appears on), to copy one run's results to all."""
    out: dict[str, list[PlannedTrial]] = {}
    for t in trials:
        out.setdefault(t.id, []).append(t)
    return out
