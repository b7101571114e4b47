"""Sweep specs: one YAML file describes a whole scaling study; `expand` turns it into fully resolved trials.

A spec is a `base` trial config plus 1-D axes (data, batch, params, depth, flops) swept around it, for every
family and seed. Everything that can be checked without FLOP counts is validated when the spec is parsed
(`load_spec`/`parse_spec`); `expand` adds the checks that need them (isoFLOP budgets, lr/batch rules). Both
raise `SpecError` naming the field path (`axes.flops.budgets.0: must be > 0`) before anything runs.

Identity: a trial's id is `TrialConfig.config_hash()` of its resolved config (seed included via train.seed),
so the same configuration reached from two axes (typically the base point) has one id; it stays one row per
axis (each axis is its own fit) and `unique_trials` gives what the orchestrator trains, once per id.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
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

from model.config import ModelFamily
from model.flops import count_params, train_flops_per_token
from orchestrator.config import PLACEMENT_FIELDS, ConfigError, TrialConfig, deep_merge, yaml_load
from orchestrator.sweep.tune_space import (
    TUNING_FILE,
    Tuned,
    TunedValues,
    TuneSpec,
    dimension_bounds,
    family_problems,
    knob_patch,
    size_key,
)
from orchestrator.trial_dir import TrialDir, sweep_folder

AXES: tuple[str, ...] = ("data", "batch", "params", "depth", "flops")
FAMILY_TAGS: dict[str, str] = {"ebt": "ebt", "transformer_pp": "tpp"}  # short, readable name prefixes
ISOFLOP_TOLERANCE = 0.01  # a flops-axis trial's compute must sit within 1% of its budget
MAX_RANGE_POINTS = 1000  # a `{start, stop, num}` range longer than this is surely a typo
_MAX_BATCH = 10**7  # a batch rule producing more sequences than this has run away

Loc = tuple[str | int, ...]


class SpecError(ConfigError):
    """A sweep spec that cannot be used. `problems` holds (field path, reason) pairs; the message joins them
    on one line so a CLI can print it as is."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "sweep spec") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"invalid {source}: " + "; ".join(f"{loc}: {msg}" for loc, msg in problems))


class _Problems(ValueError):
    """Raised inside validators to report errors at precise sub-paths (pydantic would only give the
    validator's own location); `_problems_of` unpacks it from pydantic's error context."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_path(loc)}: {msg}" for loc, msg in problems))


def _path(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


# ---------------------------------------------------------------------------------------------------------
# numeric axis values: a list, or a log-spaced {start, stop, num} range


class LogRange(BaseModel):
    """`num` log-spaced values from start to stop inclusive (integer axes round them)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    start: float = Field(gt=0)
    stop: float = Field(gt=0)
    num: int = Field(ge=1, le=MAX_RANGE_POINTS)

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
IntPoints = Annotated[list[PosInt], _points(integer=True), Field(min_length=1), Distinct]
FloatPoints = Annotated[list[PosFloat], _points(integer=False), Field(min_length=1), Distinct]
IntList = Annotated[list[PosInt], _points(integer=True), Field(min_length=1)]  # ladder widths may repeat


class _SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------------------------------------
# axes


class DataAxis(_SpecModel):
    """Sweep the training tokens D."""

    tokens: IntPoints


class BatchAxis(_SpecModel):
    """Sweep the global batch size (sequences per optimizer step); D stays at the base value."""

    global_batch_size: IntPoints


class DepthAxis(_SpecModel):
    """Sweep the number of layers at the base width."""

    n_layers: IntPoints


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


class ParamsAxis(_Ladder):
    """Sweep model size N along a width (or size-table) ladder; everything else at base."""


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
    """lr = ref_lr * (N / ref_params) ** exponent, N = non-embedding parameters (exponent < 0 typically)."""

    rule: Literal["power"]
    ref_params: PosFloat
    ref_lr: PosFloat
    exponent: Annotated[float, Field(allow_inf_nan=False)]


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
# the spec


class SweepSpec(_SpecModel):
    """A whole sweep. `base` is a TrialConfig mapping without name/output_dir/model.family (the sweep sets
    those). Precedence when resolving a trial: base < family_overrides < axis point < rules."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    description: str = ""
    families: Annotated[list[ModelFamily], Field(min_length=1), Distinct]
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1), Distinct] = [0]
    base: dict[str, Any]
    family_overrides: dict[ModelFamily, dict[str, Any]] = {}
    rules: Rules = Rules()
    axes: Axes
    tune: TuneSpec | None = None  # a search per family and size before the sweep (tune_space.py)
    output_dir: str = "outputs"

    @model_validator(mode="after")
    def _check_semantics(self) -> SweepSpec:
        problems = _reserved_keys(self)
        if not problems:
            problems = _check_bases(self)
        if not problems:
            problems = _check_points(self)
        if not problems and self.tune is not None:
            problems = _check_tune(self, self.tune)
        if problems:
            raise _Problems(_unique(problems))
        return self


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


def _trial_dict(spec: SweepSpec, family: str, patch: dict[str, Any], seed: int) -> dict[str, Any]:
    data = deep_merge(spec.base, spec.family_overrides.get(family, {}))  # type: ignore[call-overload]
    return deep_merge(data, deep_merge({"model": {"family": family}, "train": {"seed": seed}}, patch))


def _validation_problems(err: ValidationError) -> list[str]:
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
class _Point:
    """One spec entry of an axis: where it came from (for errors), its value and the config patch."""

    axis: str
    loc: Loc
    value: float
    patch: dict[str, Any]


def _base_head_dim(spec: SweepSpec, family: str) -> int:
    return TrialConfig.model_validate(_trial_dict(spec, family, {}, 0)).model.head_dim


def _ladder_points(spec: SweepSpec, family: str, axis: str, ladder: _Ladder) -> list[_Point]:
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
        points.append(_Point(axis, ("axes", axis, "d_model", j), d, patch))
    if problems:
        raise _Problems(problems)
    return points


def _axis_points(spec: SweepSpec, family: str, axis: str) -> list[_Point]:
    """The points of one axis; for the flops axis these are the ladder rungs (budgets are applied later)."""
    ax = getattr(spec.axes, axis)
    if axis == "data":
        return [
            _Point(axis, ("axes", axis, "tokens", i), v, {"train": {"tokens": v}})
            for i, v in enumerate(ax.tokens)
        ]
    if axis == "batch":
        return [
            _Point(axis, ("axes", axis, "global_batch_size", i), v, {"train": {"global_batch_size": v}})
            for i, v in enumerate(ax.global_batch_size)
        ]
    if axis == "depth":
        return [
            _Point(axis, ("axes", axis, "n_layers", i), v, {"model": {"n_layers": v}})
            for i, v in enumerate(ax.n_layers)
        ]
    return _ladder_points(spec, family, axis, ax)


def _check_points(spec: SweepSpec) -> list[tuple[Loc, str]]:
    """Every axis point must give a valid TrialConfig (rules aside: they need FLOP counts; see expand)."""
    problems: list[tuple[Loc, str]] = []
    invalid: dict[tuple[Loc, str], list[str]] = {}  # (point, reasons) -> families it fails for
    for family in spec.families:
        for axis in spec.axes.present():
            try:
                points = _axis_points(spec, family, axis)
            except _Problems as err:
                problems += err.problems
                continue
            rungs: dict[tuple[int, int], Loc] = {}
            for p in points:
                try:
                    cfg = TrialConfig.model_validate(_trial_dict(spec, family, p.patch, spec.seeds[0]))
                except ValidationError as err:
                    reasons = f"{p.value} gives an invalid trial: " + "; ".join(_validation_problems(err))
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
                                f"repeats the model of {_path(rungs[key])} "
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
                data = deep_merge(_trial_dict(spec, family, {}, spec.seeds[0]), knob_patch({knob: value}))
                try:
                    TrialConfig.model_validate(data)
                except ValidationError as err:
                    reasons = "; ".join(_validation_problems(err))
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
        cfg = TrialConfig.model_validate(_trial_dict(spec, family, {}, spec.seeds[0]))
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
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_pattern_mismatch": "must match {pattern} (lowercase letters, digits, '.', '_', '-')",
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
            out += [(_path(loc + sub), msg) for sub, msg in inner.problems]
        else:
            out.append((_path(loc), _message(e)))
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
        raise SpecError([("(file)", "not found")], str(p))
    try:
        data = yaml_load(p.read_text())
    except yaml.YAMLError as err:
        raise SpecError([("(file)", f"not valid YAML: {' '.join(str(err).split())}")], str(p)) from None
    if not isinstance(data, dict):
        raise SpecError([("(file)", "expected a mapping at the top level")], str(p))
    spec = parse_spec(data, source=str(p))
    return spec.model_copy(update={"output_dir": str(Path(spec.output_dir).expanduser().resolve())})


# ---------------------------------------------------------------------------------------------------------
# expansion


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
    """`ebt-d256-L6-D20M-s0`: the family's tag and `trial_shape`, so that rows of different axes with
    different configs cannot share a name."""
    return _tagged(cfg.model.family, trial_shape(cfg, axis, flops_budget))


def _tagged(family: str, shape: str) -> str:
    return f"{FAMILY_TAGS[family]}-{shape}"


def _resolve(
    spec: SweepSpec,
    family: str,
    point: _Point,
    seed: int,
    extra: dict[str, Any] | None = None,
    tuned: TunedValues | None = None,
) -> tuple[TrialConfig, Tuned | None]:
    """base < override < point < extra < tuned (< rules). Raises SpecError naming the point for any invalid
    result. Returns the config and the tuned values it got, if any."""
    data = _trial_dict(spec, family, point.patch, seed)
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
        reasons = "; ".join(_validation_problems(err))
        raise SpecError(
            [(_path(point.loc), f"{point.value} gives an invalid {family} trial: {reasons}")]
        ) from None


def _power(x: float, exponent: float) -> float:
    try:
        return x**exponent
    except OverflowError:
        return math.inf


def _rule_patch(spec: SweepSpec, cfg: TrialConfig, point: _Point) -> dict[str, Any]:
    lr_rule, batch_rule = spec.rules.lr, spec.rules.batch
    if isinstance(lr_rule, FixedRule) and (isinstance(batch_rule, FixedRule) or point.axis == "batch"):
        return {}
    n = count_params(cfg.model)["non_embedding"]
    patch: dict[str, Any] = {}
    if isinstance(lr_rule, PowerLrRule):
        lr = lr_rule.ref_lr * _power(n / lr_rule.ref_params, lr_rule.exponent)
        if not (math.isfinite(lr) and lr > 0):
            raise SpecError([("rules.lr", f"gives lr={lr} for N={n} at {_path(point.loc)}")])
        patch["optim"] = {"lr": lr}
    if isinstance(batch_rule, PowerBatchRule) and point.axis != "batch":
        multiple = cfg.train.micro_batch_size * cfg.resources.num_workers
        raw = batch_rule.ref_batch * _power(n / batch_rule.ref_params, batch_rule.exponent)
        if not (math.isfinite(raw) and raw <= _MAX_BATCH):
            raise SpecError(
                [("rules.batch", f"gives global_batch_size={raw:g} for N={n} at {_path(point.loc)}")]
            )
        patch["train"] = {"global_batch_size": max(1, math.floor(raw / multiple + 0.5)) * multiple}
    return patch


def _planned(
    spec: SweepSpec, cfg: TrialConfig, point: _Point, budget: float | None, tuned: Tuned | None = None
) -> PlannedTrial:
    trial_id = cfg.config_hash()
    shape = trial_shape(cfg, point.axis, budget)
    name = _tagged(cfg.model.family, shape)
    src = _path(point.loc) if budget is None else f"{_path(point.loc)}@{budget_tag(budget)}"
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
        tuned=tuned,
    )


def _place(spec: SweepSpec, trials: list[PlannedTrial]) -> list[PlannedTrial]:
    """Every row's trial folder, fixed here once: one folder per id (trained once), named after the id's
    first row, `<output_dir>/<sweep>/trials/<name>-<id>`."""
    folders: dict[str, str] = {}
    placed = []
    for t in trials:
        folder = folders.setdefault(
            t.id, str(TrialDir.in_sweep(spec.output_dir, spec.name, t.name, t.id).path)
        )
        placed.append(replace(t, config=t.config.model_copy(update={"trial_dir": folder})))
    return placed


def _isoflop(spec: SweepSpec, family: str, tuned: TunedValues | None) -> Iterator[PlannedTrial]:
    """Per budget: the feasible rungs (>= 1 step and within 1% after rounding to whole steps), then `points`
    of them nearest to log-even targets in N between the smallest and largest feasible N."""
    ax: FlopsAxis = spec.axes.flops  # type: ignore[assignment]
    rungs = []
    for point in _axis_points(spec, family, "flops"):
        cfg, _ = _resolve(spec, family, point, spec.seeds[0], tuned=tuned)
        per_step = train_flops_per_token(cfg.model) * cfg.tokens_per_step
        rungs.append((point, count_params(cfg.model)["non_embedding"], per_step, cfg.tokens_per_step))
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


def _pick_log_even(candidates: list[tuple[int, _Point, int]], k: int) -> list[tuple[int, _Point, int]]:
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


def expand(spec: SweepSpec) -> list[PlannedTrial]:
    """families x axes x points x seeds, fully resolved, with the tuning stage's values when the spec has a
    `tune:` block and its search is complete (`tuning_state`). Raises SpecError for budgets that cannot be
    met, rules that run away, and name clashes (a name must always mean the same config)."""
    trials = _expand(spec, None)
    if spec.tune is None:
        return trials
    state = tuning_state(spec, trials)
    return trials if state.values is None else _expand(spec, state.values)


def _expand(spec: SweepSpec, tuned: TunedValues | None) -> list[PlannedTrial]:
    trials: list[PlannedTrial] = []
    for family in spec.families:
        for axis in spec.axes.present():
            if axis == "flops":
                trials += list(_isoflop(spec, family, tuned))
                continue
            for point in _axis_points(spec, family, axis):
                for seed in spec.seeds:
                    cfg, got = _resolve(spec, family, point, seed, tuned=tuned)
                    trials.append(_planned(spec, cfg, point, None, got))
    _check_identities(trials)
    return _place(spec, trials)


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


def tuning_path(spec: SweepSpec) -> Path:
    """Where the spec's tuning stage keeps its outcome: `<output_dir>/<sweep>/tuning.json`."""
    return sweep_folder(spec.output_dir, spec.name) / TUNING_FILE


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
            data = _trial_dict(spec, t.family, {"model": model}, spec.seeds[0])
            sizes[key] = TrialConfig.model_validate(data)
    fingerprint = tune.fingerprint(
        {k: c.model_dump(mode="json", exclude=PLACEMENT_FIELDS) for k, c in sorted(sizes.items())}
    )
    path = tuning_path(spec)
    values = TunedValues.load(path)
    if values is None:
        return TuningState(sizes, fingerprint, "missing", None, path)
    if values.fingerprint != fingerprint:
        return TuningState(sizes, fingerprint, "stale", None, path)
    return TuningState(sizes, fingerprint, "complete", values, path)


def _tuning_shapes(spec: SweepSpec) -> set[tuple[str, int, int]]:
    """(family, d_model, n_layers) of every axis point (all flops rungs, picked or not): for validation."""
    shapes = set()
    for family in spec.families:
        for axis in spec.axes.present():
            for point in _axis_points(spec, family, axis):
                cfg = TrialConfig.model_validate(_trial_dict(spec, family, point.patch, spec.seeds[0]))
                shapes.add((family, cfg.model.d_model, cfg.model.n_layers))
    return shapes


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
