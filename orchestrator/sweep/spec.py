"""Sweep specs, the schema: one YAML file describes a whole scaling study (`SweepSpec`); `expand.py` turns it
into fully resolved trials.

A spec is a `base` trial config plus 1-D axes (data, batch, params, depth, flops) swept around it, for every
family and seed. Everything that can be checked without FLOP counts is validated here when the spec is parsed
(`load_spec`/`parse_spec`); `expand` adds the checks that need them (isoFLOP budgets, lr/batch rules). Both
raise `SpecError` naming the field path (`axes.flops.budgets.0: must be > 0`) before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from model.config import ModelConfig, ModelFamily
from orchestrator.config import ConfigError, TrialConfig, deep_merge, yaml_load
from orchestrator.sweep.lr_law import LrPowerLaw
from orchestrator.sweep.tune_space import TuneSpec, dimension_bounds, family_problems, knob_patch
from orchestrator.sweep_dir import DEFAULT_OUTPUT_DIR, SweepDir
from orchestrator.trial_dir import NAME_PATTERN, NAME_RULE

AXES: tuple[str, ...] = ("data", "batch", "params", "depth", "flops")
ISOFLOP_TOLERANCE = 0.01  # a flops-axis trial's compute must sit within 1% of its budget
MAX_AXIS_POINTS = 1000  # an axis' values, a list or a `{start, stop, num}` range: more is surely a typo
MAX_PLANNED_ROWS = 20_000  # families x points x seeds (x budgets on the flops axis): the plan's rows
MAX_BATCH = 10**7  # a batch rule producing more sequences than this has run away

Loc = tuple[str | int, ...]


class SpecError(ConfigError):
    """A sweep spec that cannot be used. `problems` holds (field path, reason) pairs: one problem reads as
    one line, several as one line each under the first (a CLI prints the lines as they are); `advice`, what
    to do about all of them, is said once at the end. A problem of the file itself ("(file)") names the file
    rather than a field."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "sweep spec", advice: str = "") -> None:
        self.problems = problems
        self.source = source
        if [loc for loc, _ in problems] == [FILE]:
            lines = [f"{source}: {problems[0][1]}"]
        elif len(problems) == 1:
            lines = [f"invalid {source}: {problems[0][0]}: {problems[0][1]}"]
        else:
            lines = [f"invalid {source}:", *(f"  {loc}: {msg}" for loc, msg in problems)]
        if advice:
            lines.append(f"  ({advice})")
        super().__init__("\n".join(lines))


FILE = "(file)"  # the location of a problem with a spec file as a whole (missing, not YAML)


class _Problems(ValueError):
    """Raised inside validators to report errors at precise sub-paths (pydantic would only give the
    validator's own location); `_problems_of` unpacks it from pydantic's error context."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field_path(loc)}: {msg}" for loc, msg in problems))


def field_path(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


# ---------------------------------------------------------------------------------------------------------
# numeric axis values: a list, or a log-spaced {start, stop, num} range


class LogRange(BaseModel):
    """`num` log-spaced values from start to stop inclusive (integer axes round them)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    start: float = Field(gt=0)
    stop: float = Field(gt=0)
    num: int = Field(ge=1, le=MAX_AXIS_POINTS)

    def values(self) -> list[float]:
        if self.num == 1:
            return [self.start]
        ratio = self.stop / self.start
        return [self.start * ratio ** (i / (self.num - 1)) for i in range(self.num)]


def _number(value: Any) -> Any:
    """YAML 1.1 reads `1e5` and `1.0e5` as strings; accept them as numbers where a number is expected."""
    if isinstance(value, str):
        try:
            as_float = float(value)
        except ValueError:
            return value
        return int(as_float) if as_float.is_integer() and abs(as_float) < 2**63 else as_float
    return value


def _points(integer: bool):
    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            try:
                values = LogRange.model_validate({k: _number(v) for k, v in value.items()})
            except ValidationError as err:
                raise _Problems([((loc,), msg) for loc, msg in _problems_of(err)]) from None
            out = values.values()
            if not all(math.isfinite(v) for v in out):
                raise _Problems([((), "range values overflow")])
            return [math.floor(v + 0.5) for v in out] if integer else out
        if isinstance(value, list | tuple):
            return [_number(v) for v in value]
        return value

    return BeforeValidator(convert)


def _distinct(values: list[Any]) -> list[Any]:
    seen: dict[Any, int] = {}
    for i, v in enumerate(values):
        if v in seen:
            raise _Problems([((i,), f"duplicate value {v} (same as entry {seen[v]}; check range rounding)")])
        seen[v] = i
    return values


PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Distinct = AfterValidator(_distinct)
# The same limit on an axis' points whatever form they take (a list, or a range's `num`)
Points = Field(min_length=1, max_length=MAX_AXIS_POINTS)
IntPoints = Annotated[list[PosInt], _points(integer=True), Points, Distinct]
FloatPoints = Annotated[list[PosFloat], _points(integer=False), Points, Distinct]
IntList = Annotated[list[PosInt], _points(integer=True), Points]  # ladder widths may repeat


class _SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------------------------------------
# axes


class DataAxis(_SpecModel):
    """Sweep the training tokens D."""

    tokens: IntPoints

    @property
    def size(self) -> int:
        """Its points (one trial each, per family and seed)."""
        return len(self.tokens)


class BatchAxis(_SpecModel):
    """Sweep the global batch size (sequences per optimizer step). By default D stays at the base value, so
    the steps shrink as the batch grows; with `steps`, every point trains that many optimizer steps and D =
    steps x batch x context grows with the batch (each point then learns from as many updates)."""

    global_batch_size: IntPoints
    steps: PosInt | None = None

    @property
    def size(self) -> int:
        """Its points (one trial each, per family and seed)."""
        return len(self.global_batch_size)


class DepthAxis(_SpecModel):
    """Sweep the number of layers at the base width; with `tokens`, every point trains that many tokens
    instead of the base's (a depth or width effect can hide under a budget too small to use it)."""

    n_layers: IntPoints
    tokens: PosInt | None = None

    @property
    def size(self) -> int:
        """Its points (one trial each, per family and seed)."""
        return len(self.n_layers)


class _Ladder(_SpecModel):
    """A ladder of model sizes. Heads: `head_dim` (n_heads = d_model/head_dim) or per-rung `n_heads`, else the
    base's head dimension; d_ff is always derived (ModelConfig default). Optional per-rung `n_layers` and
    `lr` let a ladder follow a published size table (width and depth grow together, each size its own LR)."""

    d_model: IntList
    head_dim: PosInt | None = None
    n_heads: list[PosInt] | None = None
    n_layers: list[PosInt] | None = None
    lr: list[PosFloat] | None = None

    @model_validator(mode="after")
    def _check_rungs(self) -> _Ladder:
        problems: list[tuple[Loc, str]] = []
        if self.head_dim is not None and self.n_heads is not None:
            problems.append((("n_heads",), "give head_dim or n_heads, not both"))
        for name in ("n_heads", "n_layers", "lr"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.d_model):
                problems.append(
                    ((name,), f"needs one entry per d_model entry ({len(self.d_model)}), got {len(values)}")
                )
        if problems:
            raise _Problems(problems)
        return self

    @property
    def size(self) -> int:
        """Its rungs (one trial each, per family and seed)."""
        return len(self.d_model)


class ParamsAxis(_Ladder):
    """Sweep model size N along a width (or size-table) ladder; everything else at base, but the training
    tokens with `tokens` (as on the depth axis)."""

    tokens: PosInt | None = None


class FlopsAxis(_Ladder):
    """isoFLOP grid: per budget C, `points` ladder models spread log-evenly in N, each trained on
    D = C / (its family's training FLOPs per token), rounded to whole optimizer steps."""

    budgets: FloatPoints
    points: int = Field(3, ge=1, le=64)

    @model_validator(mode="after")
    def _check_points(self) -> FlopsAxis:
        if self.points > len(self.d_model):
            raise _Problems([(("points",), f"{self.points} exceeds the ladder's {len(self.d_model)} models")])
        return self

    @property
    def size(self) -> int:
        """Its trials per family and seed: `points` rungs at each budget."""
        return len(self.budgets) * self.points


class Axes(_SpecModel):
    data: DataAxis | None = None
    batch: BatchAxis | None = None
    params: ParamsAxis | None = None
    depth: DepthAxis | None = None
    flops: FlopsAxis | None = None

    @model_validator(mode="after")
    def _check_any(self) -> Axes:
        if all(getattr(self, a) is None for a in AXES):
            raise _Problems([((), f"at least one axis is required ({', '.join(AXES)})")])
        return self

    def present(self) -> list[str]:
        return [a for a in AXES if getattr(self, a) is not None]


# ---------------------------------------------------------------------------------------------------------
# rules: hyper-parameters derived from N (non-embedding parameters)


class FixedRule(_SpecModel):
    """Keep the value from base (and family_overrides / ladder)."""

    rule: Literal["fixed"] = "fixed"


class PowerLrRule(_SpecModel):
    """lr = ref_lr * (N / ref_params) ** exponent, N = non-embedding parameters (exponent < 0 typically): the
    spec's declaration of the lr law (`law`), which the tuning stage fits when it carries lrs instead."""

    rule: Literal["power"]
    ref_params: PosFloat
    ref_lr: PosFloat
    exponent: Annotated[float, Field(allow_inf_nan=False)]

    @property
    def law(self) -> LrPowerLaw:
        return LrPowerLaw(self.ref_params, self.ref_lr, self.exponent)


class PowerBatchRule(_SpecModel):
    """global_batch_size = ref_batch * (N / ref_params) ** exponent, rounded to a multiple of
    micro_batch_size x num_workers (at least one). Not applied on the batch axis, which sets it."""

    rule: Literal["power"]
    ref_params: PosFloat
    ref_batch: PosInt
    exponent: Annotated[float, Field(allow_inf_nan=False)]


class Rules(_SpecModel):
    lr: Annotated[FixedRule | PowerLrRule, Field(discriminator="rule")] = FixedRule()
    batch: Annotated[FixedRule | PowerBatchRule, Field(discriminator="rule")] = FixedRule()


# ---------------------------------------------------------------------------------------------------------
# adaptive rounds (`sweep extend`, orchestrator/sweep/extend.py)


class AdaptiveSpec(_SpecModel):
    """Adaptive rounds on one axis after the sweep has run: each round adds the trials that narrow the EBT
    vs Transformer++ verdict's interval most per training FLOP, until `target_width`, `budget_flops` or no
    candidate helps. Candidates: `points` log-spaced axis values over `range` (default: the axis' own span),
    and another seed at a value a family has once it has `min_distinct` of them."""

    axis: Literal["data", "batch"]  # the axes whose new x keep every model size (so its tuning holds)
    budget_flops: PosFloat  # training FLOPs all rounds together may add
    target_width: PosFloat | None = None  # of the relative exponent difference's 95% interval (0.2: ±10%)
    batch: Annotated[int, Field(ge=1, le=64)] = 4  # trials per round
    points: Annotated[int, Field(ge=2, le=256)] = 21
    range: tuple[PosFloat, PosFloat] | None = None
    min_distinct: Annotated[int, Field(ge=2)] | None = None  # None: analysis.design.MIN_DISTINCT

    @model_validator(mode="after")
    def _check_range(self) -> AdaptiveSpec:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise _Problems([(("range",), f"needs low < high, got {list(self.range)}")])
        return self


# ---------------------------------------------------------------------------------------------------------
# the spec


class SweepSpec(_SpecModel):
    """A whole sweep. `base` is a TrialConfig mapping without name/output_dir/model.family (the sweep sets
    those). Precedence when resolving a trial: base < family_overrides < axis point < rules."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64)  # the sweep's folder and MLflow experiment
    description: str = ""
    families: Annotated[list[ModelFamily], Field(min_length=1), Distinct]
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Points, Distinct] = [0]
    base: dict[str, Any]
    family_overrides: dict[ModelFamily, dict[str, Any]] = {}
    rules: Rules = Rules()
    axes: Axes
    tune: TuneSpec | None = None  # a search per family and size before the sweep (tune_space.py)
    adaptive: AdaptiveSpec | None = None  # rounds that narrow a verdict after the sweep (`sweep extend`)
    output_dir: str = DEFAULT_OUTPUT_DIR

    @property
    def folder(self) -> SweepDir:
        """The sweep's own folder, `<output_dir>/<name>` (every file in it: orchestrator/sweep_dir.py)."""
        return SweepDir.of(self.output_dir, self.name)

    @model_validator(mode="after")
    def _check_semantics(self) -> SweepSpec:
        problems = _reserved_keys(self) or _check_size(self)
        if not problems:
            problems = _check_bases(self)
        if not problems:
            problems = _check_points(self)
        if not problems and self.tune is not None:
            problems = _check_tune(self, self.tune)
        if not problems and self.adaptive is not None and getattr(self.axes, self.adaptive.axis) is None:
            problems = [(("adaptive", "axis"), f"{self.adaptive.axis!r} is not one of this sweep's axes")]
        if problems:
            raise _Problems(_unique(problems))
        return self


def planned_rows_bound(spec: SweepSpec) -> int:
    """An upper bound of the plan's rows from the spec's sizes alone (before any point is resolved):
    families x every axis' points x seeds."""
    points = sum(getattr(spec.axes, axis).size for axis in spec.axes.present())
    return len(spec.families) * points * len(spec.seeds)


def _check_size(spec: SweepSpec) -> list[tuple[Loc, str]]:
    """The product of the axes, families and seeds (and of a tuning stage's samples) is capped like each
    axis: a spec that would plan more is refused before any of its points is resolved."""
    rows, cap = planned_rows_bound(spec), MAX_PLANNED_ROWS
    problems: list[tuple[Loc, str]] = []
    if rows > cap:
        problems.append((("axes",), f"plans up to {rows:,} trials (families x points x seeds), over {cap:,}"))
    elif spec.tune is not None and rows * spec.tune.num_samples > cap:
        samples = spec.tune.num_samples
        problems.append((("tune", "num_samples"), f"{samples} for up to {rows:,} sizes: over {cap:,} trials"))
    return problems


def _unique(problems: list[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    return list(dict.fromkeys(problems))


def _reserved_keys(spec: SweepSpec) -> list[tuple[Loc, str]]:
    """name/output_dir/family are per-trial outputs of the sweep; setting them in base would be ignored."""
    problems: list[tuple[Loc, str]] = []
    patches: list[tuple[Loc, dict[str, Any]]] = [(("base",), spec.base)]
    patches += [(("family_overrides", f), p) for f, p in spec.family_overrides.items()]
    for loc, patch in patches:
        for key in ("name", "output_dir"):
            if key in patch:
                problems.append(((*loc, key), "set by the sweep (trial names / the spec's output_dir)"))
        if isinstance(patch.get("model"), dict) and "family" in patch["model"]:
            problems.append(((*loc, "model", "family"), "set by the spec's `families`"))
    for family in spec.family_overrides:
        if family not in spec.families:
            problems.append((("family_overrides", family), f"family not in families {spec.families}"))
    if isinstance(spec.rules.lr, PowerLrRule):
        for axis in ("params", "flops"):
            ladder = getattr(spec.axes, axis)
            if ladder is not None and ladder.lr is not None:
                problems.append((("rules", "lr"), f"conflicts with per-rung axes.{axis}.lr"))
    return problems


def trial_dict(spec: SweepSpec, family: str, patch: dict[str, Any], seed: int) -> dict[str, Any]:
    data = deep_merge(spec.base, spec.family_overrides.get(family, {}))  # type: ignore[call-overload]
    return deep_merge(data, deep_merge({"model": {"family": family}, "train": {"seed": seed}}, patch))


def validation_problems(err: ValidationError) -> list[str]:
    return [f"{loc}: {msg}" if loc != "(root)" else msg for loc, msg in _problems_of(err)]


def _check_bases(spec: SweepSpec) -> list[tuple[Loc, str]]:
    """The base (then base + override) must be a valid TrialConfig for every family, with >= 1 step."""
    problems: list[tuple[Loc, str]] = []
    for family in spec.families:
        # base alone first (a family patch must not hide `model: 5`), then with the family, then override
        layers: list[tuple[Loc, dict[str, Any]]] = [
            (("base",), {}),
            (("base",), {"model": {"family": family}}),
        ]
        if family in spec.family_overrides:
            layers.append((("family_overrides", family), spec.family_overrides[family]))  # type: ignore[index]
        data = spec.base
        for loc, patch in layers:
            data = deep_merge(data, patch)
            try:
                cfg = TrialConfig.model_validate(data)
            except ValidationError as err:
                problems += [(loc if sub == "(root)" else (*loc, sub), msg) for sub, msg in _problems_of(err)]
                break
            if cfg.train.tokens < cfg.tokens_per_step:
                problems.append(
                    (
                        (*loc, "train.tokens"),
                        f"{cfg.train.tokens} is less than one optimizer step "
                        f"({cfg.tokens_per_step} tokens = global_batch_size x context_length)",
                    )
                )
                break
    return problems


# ---------------------------------------------------------------------------------------------------------
# axis points


@dataclass(frozen=True)
class AxisPoint:
    """One spec entry of an axis: where it came from (for errors), its value and the config patch."""

    axis: str
    loc: Loc
    value: float
    patch: dict[str, Any]


def _base_model(spec: SweepSpec, family: str) -> ModelConfig:
    """The family's base model config (base < family_overrides)."""
    return TrialConfig.model_validate(trial_dict(spec, family, {}, 0)).model


def _base_head_dim(spec: SweepSpec, family: str) -> int:
    return _base_model(spec, family).head_dim


def _batch_patch(ax: BatchAxis, batch: int, context: int) -> dict[str, int]:
    """A batch point's train section: the batch, and with `steps` the tokens of that many steps."""
    patch = {"global_batch_size": batch}
    if ax.steps is not None:
        patch["tokens"] = ax.steps * batch * context
    return patch


def _ladder_points(spec: SweepSpec, family: str, axis: str, ladder: _Ladder) -> list[AxisPoint]:
    """One point per rung; raises _Problems if heads do not divide a width."""
    head_dim = ladder.head_dim or _base_head_dim(spec, family)
    source = "head_dim" if ladder.head_dim else "the base's head dimension"
    points, problems = [], []
    for j, d in enumerate(ladder.d_model):
        if ladder.n_heads is not None:
            heads = ladder.n_heads[j]
            if d % heads:
                problems.append((("axes", axis, "n_heads", j), f"{heads} heads do not divide d_model {d}"))
                continue
        else:
            if d % head_dim:
                problems.append((("axes", axis, "d_model", j), f"{source} {head_dim} does not divide {d}"))
                continue
            heads = d // head_dim
        model: dict[str, Any] = {"d_model": d, "n_heads": heads, "d_ff": None}
        if ladder.n_layers is not None:
            model["n_layers"] = ladder.n_layers[j]
        patch: dict[str, Any] = {"model": model}
        if ladder.lr is not None:
            patch["optim"] = {"lr": ladder.lr[j]}
        points.append(AxisPoint(axis, ("axes", axis, "d_model", j), d, patch))
    if problems:
        raise _Problems(problems)
    return points


def axis_points(spec: SweepSpec, family: str, axis: str) -> list[AxisPoint]:
    """The points of one axis; for the flops axis these are the ladder rungs (budgets are applied later)."""
    ax = getattr(spec.axes, axis)
    if axis == "data":
        return [
            AxisPoint(axis, ("axes", axis, "tokens", i), v, {"train": {"tokens": v}})
            for i, v in enumerate(ax.tokens)
        ]
    if axis == "batch":
        context = _base_model(spec, family).context_length
        loc = ("axes", axis, "global_batch_size")
        return [
            AxisPoint(axis, (*loc, i), v, {"train": _batch_patch(ax, v, context)})
            for i, v in enumerate(ax.global_batch_size)
        ]
    if axis == "depth":
        points = [
            AxisPoint(axis, ("axes", axis, "n_layers", i), v, {"model": {"n_layers": v}})
            for i, v in enumerate(ax.n_layers)
        ]
    else:
        points = _ladder_points(spec, family, axis, ax)
    if isinstance(ax, ParamsAxis | DepthAxis) and ax.tokens is not None:  # every size at these tokens
        points = [replace(p, patch={**p.patch, "train": {"tokens": ax.tokens}}) for p in points]
    return points


def _check_points(spec: SweepSpec) -> list[tuple[Loc, str]]:
    """Every axis point must give a valid TrialConfig (rules aside: they need FLOP counts; see expand)."""
    problems: list[tuple[Loc, str]] = []
    invalid: dict[tuple[Loc, str], list[str]] = {}  # (point, reasons) -> families it fails for
    for family in spec.families:
        for axis in spec.axes.present():
            try:
                points = axis_points(spec, family, axis)
            except _Problems as err:
                problems += err.problems
                continue
            rungs: dict[tuple[int, int], Loc] = {}
            for p in points:
                try:
                    cfg = TrialConfig.model_validate(trial_dict(spec, family, p.patch, spec.seeds[0]))
                except ValidationError as err:
                    reasons = f"{p.value} gives an invalid trial: " + "; ".join(validation_problems(err))
                    invalid.setdefault((p.loc, reasons), []).append(family)
                    continue
                if axis in ("data", "batch", "depth") and cfg.train.tokens < cfg.tokens_per_step:
                    problems.append(
                        (
                            p.loc,
                            f"{p.value}: {cfg.train.tokens} tokens are less than one optimizer "
                            f"step ({cfg.tokens_per_step} tokens)",
                        )
                    )
                if axis in ("params", "flops"):
                    key = (cfg.model.d_model, cfg.model.n_layers)
                    if key in rungs:
                        problems.append(
                            (
                                p.loc,
                                f"repeats the model of {field_path(rungs[key])} "
                                f"(d_model {key[0]}, n_layers {key[1]})",
                            )
                        )
                    rungs.setdefault(key, p.loc)
    for (loc, reasons), families in invalid.items():
        only = "" if len(families) == len(spec.families) else f" ({', '.join(families)})"
        problems.append((loc, reasons + only))
    return problems


def _check_tune(spec: SweepSpec, tune: TuneSpec) -> list[tuple[Loc, str]]:
    """The search space must fit the sweep: known families and knobs, no clash with an lr rule or per-rung
    lrs, every searched value a valid trial, sizes that the sweep trains, and enough steps to report on."""
    problems = family_problems(tune, list(spec.families))
    if problems:
        return problems
    for family, space in tune.space.items():
        loc: Loc = ("tune", "space", family)
        if space.lr is not None:
            if isinstance(spec.rules.lr, PowerLrRule):
                problems.append(((*loc, "lr"), "conflicts with rules.lr (power): tune lr or derive it"))
            for axis in ("params", "flops"):
                ladder = getattr(spec.axes, axis)
                if ladder is not None and ladder.lr is not None:
                    problems.append(((*loc, "lr"), f"conflicts with per-rung axes.{axis}.lr"))
        for knob, dim in space.knobs().items():
            for value in sorted(set(dimension_bounds(dim))):
                data = deep_merge(trial_dict(spec, family, {}, spec.seeds[0]), knob_patch({knob: value}))
                try:
                    TrialConfig.model_validate(data)
                except ValidationError as err:
                    reasons = "; ".join(validation_problems(err))
                    problems.append(((*loc, knob), f"{value:g} gives an invalid {family} trial: {reasons}"))
                    break
    if problems:
        return problems
    shapes = _tuning_shapes(spec)
    if tune.sizes != "all":
        widths = sorted({d for (family, d, _layers) in shapes if family in tune.space})
        for i, d in enumerate(tune.sizes):
            if d not in widths:
                problems.append((("tune", "sizes", i), f"d_model {d} is not a size of this sweep {widths}"))
    for family in tune.space:
        cfg = TrialConfig.model_validate(trial_dict(spec, family, {}, spec.seeds[0]))
        steps = tune.budget.tokens_for(cfg.train.tokens) // cfg.tokens_per_step
        if steps < tune.reports:
            problems.append(
                (
                    ("tune", "budget"),
                    f"gives {steps} optimizer steps per {family} tuning trial ({cfg.tokens_per_step} tokens "
                    f"each), fewer than reports ({tune.reports})",
                )
            )
    return problems


# ---------------------------------------------------------------------------------------------------------
# parsing


_MESSAGES = {  # pydantic error type -> what a spec author needs to read
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "literal_error": "must be one of {expected}",
    "finite_number": "must be a finite number",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list (or a {{start, stop, num}} range where numbers are swept)",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "too_long": "has {actual_length} entries, over the limit of {max_length}",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_pattern_mismatch": f"must be a name of {NAME_RULE}",
}


def _message(e: dict[str, Any]) -> str:
    ctx = e.get("ctx") or {}
    kind = e["type"]
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"needs at least {n} entries"
    if kind == "extra_forbidden" and len(e["loc"]) == 2 and e["loc"][0] == "axes":
        return f"unknown axis (expected one of {', '.join(AXES)})"
    if kind in _MESSAGES:
        try:
            return _MESSAGES[kind].format(
                **{k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
            )
        except (KeyError, IndexError):
            pass
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(e["msg"])


def _problems_of(err: ValidationError) -> list[tuple[str, str]]:
    """(field path, reason) pairs, unpacking `_Problems` raised by our validators at deeper paths."""
    out: list[tuple[str, str]] = []
    for e in err.errors():
        loc: Loc = tuple(p for p in e["loc"] if p != "[key]")
        inner = (e.get("ctx") or {}).get("error")
        if isinstance(inner, _Problems):
            out += [(field_path(loc + sub), msg) for sub, msg in inner.problems]
        else:
            out.append((field_path(loc), _message(e)))
    return out


def parse_spec(data: Any, source: str = "sweep spec") -> SweepSpec:
    """Validate a spec mapping (already loaded from YAML); SpecError names every offending field."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_problems_of(err), source) from None


def load_spec(path: str | Path) -> SweepSpec:
    """Safe-load and validate a spec file; a relative output_dir is resolved against the current directory."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([(FILE, "not found")], str(p))
    try:
        data = yaml_load(p.read_text())
    except yaml.YAMLError as err:
        raise SpecError([(FILE, f"not valid YAML: {' '.join(str(err).split())}")], str(p)) from None
    if not isinstance(data, dict):
        raise SpecError([(FILE, "expected a mapping at the top level")], str(p))
    spec = parse_spec(data, source=str(p))
    return spec.model_copy(update={"output_dir": str(Path(spec.output_dir).expanduser().resolve())})


def _tuning_shapes(spec: SweepSpec) -> set[tuple[str, int, int]]:
    """(family, d_model, n_layers) of every axis point (all flops rungs, picked or not): for validation."""
    shapes = set()
    for family in spec.families:
        for axis in spec.axes.present():
            for point in axis_points(spec, family, axis):
                cfg = TrialConfig.model_validate(trial_dict(spec, family, point.patch, spec.seeds[0]))
                shapes.add((family, cfg.model.d_model, cfg.model.n_layers))
    return shapes
