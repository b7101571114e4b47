"""`sweep extend`: adaptive rounds that narrow one axis' EBT vs Transformer++ verdict per training FLOP.

Each round, on a sweep that has run:
1. the axis' finished trials are read back from the sweep's MLflow store and fitted as the report fits them
   (analysis.design.measure): the interval width of the relative exponent difference is the round's width;
2. analysis.design chooses up to `batch` trials that narrow that interval most per training FLOP: new
   values on the allowed grid (in between or beyond, within `range`) or another seed, for either family;
3. they are planned as the sweep plans its own trials (expand.extra_trial: names, ids, tuned values,
   folders) and trained on Ray through a Tune Searcher (`RoundSearcher`, warm-started with the store's
   finished trials) that hands Tune the round's batch.
It stops at the target width, at the FLOP budget, or when no candidate narrows the interval, and says which.

Resumable and idempotent: each round is written to extend.json before its trials train, and a rerun first
finishes an unfinished round (finished trials are skipped, interrupted ones resume from their checkpoints,
as in `sweep run`) before choosing anew. A trial's identity is its config hash: nothing trains twice.
Recorded in MLflow on the sweep's parent run: per round (the metric's step) the measured width, the expected
width after its trials and the cumulative FLOPs added; the round as `extend/round-<n>.json`; the stopping
reason as a tag. Each added trial's own run carries its round as a tag.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator import tags
from orchestrator.config import ConfigError
from orchestrator.sweep.expand import AXIS_FIELDS, PlannedTrial, expand, extra_trial
from orchestrator.sweep.spec import AdaptiveSpec, SpecError, SweepSpec
from orchestrator.tracking import mlflow_client, resolve_tracking_uri

BOOTSTRAP = 1000  # resamples of each round's measured interval: the report's own count


@dataclass(frozen=True)
class ExtendSettings:
    """What a `sweep extend` asks: the spec's adaptive: block, with the command line's overrides."""

    axis: str
    budget_flops: float
    target_width: float | None
    batch: int
    points: int
    range: tuple[float, float] | None
    min_distinct: int | None  # None: analysis.design's default

    @classmethod
    def of(cls, spec: SweepSpec, **overrides: Any) -> ExtendSettings:
        """The spec's `adaptive:` block, each field replaced by an override that is not None. Raises
        ConfigError naming the missing field (the block validates the rest)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        block = spec.adaptive.model_dump() if spec.adaptive is not None else {}
        if "budget_flops" not in {**block, **given}:
            raise ConfigError(
                f"sweep {spec.name}: `sweep extend` needs a FLOP budget: --budget-flops, or "
                "adaptive.budget_flops in the spec"
            )
        block = {"axis": _default_axis(spec), **block, **given}
        checked = AdaptiveSpec.model_validate(block)
        if getattr(spec.axes, checked.axis) is None:
            raise ConfigError(f"sweep {spec.name} has no {checked.axis} axis to extend (adaptive.axis)")
        return cls(**checked.model_dump())


def _default_axis(spec: SweepSpec) -> str:
    return "data" if spec.axes.data is not None else "batch"


@dataclass
class RoundRecord:
    """One round as extend.json and MLflow keep it."""

    number: int
    width: float  # measured before the round's trials (NaN: no interval)
    relative: list[float] | None  # [estimate, lo, hi] of the relative exponent difference
    expected_width: float  # after the round's trials, as the scoring expects it
    flops: float  # the round's trials' training FLOPs
    trials: list[dict[str, Any]] = field(default_factory=list)  # name, id, family, x, seed, kind, cost...
    trained: bool = False
    logged: bool = False  # on the sweep's MLflow run (after training: a kill before it logs on resume)


@dataclass
class ExtendState:
    """extend.json: the rounds so far and, once it stopped, why."""

    axis: str
    rounds: list[RoundRecord] = field(default_factory=list)
    stop: str | None = None
    final_width: float | None = None

    @property
    def spent(self) -> float:
        return self.spent_through(len(self.rounds))

    def spent_through(self, number: int) -> float:
        """The training FLOPs the rounds up to and including round `number` added."""
        return sum(r.flops for r in self.rounds if r.number <= number)

    @classmethod
    def load(cls, spec: SweepSpec, axis: str) -> ExtendState:
        path = spec.folder.extend_file
        if not path.exists():
            return cls(axis)
        data = json.loads(path.read_text())
        if data.get("axis") != axis:
            raise ConfigError(
                f"{path} holds rounds on the {data.get('axis')} axis, not {axis}: extend that axis, or "
                "move the file away to start over"
            )
        rounds = [RoundRecord(**r) for r in data.get("rounds", [])]
        return cls(axis, rounds, data.get("stop"), data.get("final_width"))

    def save(self, spec: SweepSpec) -> None:
        path = spec.folder.extend_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, default=_json_number))
        tmp.replace(path)


def _json_number(value: Any) -> Any:
    """numpy scalars (the design's widths and x) as plain numbers; anything else is a bug, not a string."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"extend.json cannot hold {type(value).__name__}: {value!r}")


def round_searcher(known: dict[str, float]) -> Callable[[list[dict[str, Any]]], Any]:
    """A factory of the round's Tune Searcher (runner.run_on_ray builds it from the round's jobs)."""
    from ray.tune.search import Searcher

    class RoundSearcher(Searcher):
        """Hands Tune the round's trials, one job per suggestion, then FINISHED. Warm-started with the
        store's finished trials (`add_evaluated_point`): a job whose trial is already known is never
        suggested, so a round relaunched after a kill cannot train a trial twice."""

        def __init__(self, jobs: list[dict[str, Any]]) -> None:
            super().__init__(metric="val_loss", mode="min")
            self.jobs = list(jobs)
            self.known: dict[str, float] = {}
            self.live: dict[str, str] = {}  # Tune's trial id -> our trial id
            for trial_id, loss in known.items():
                self.add_evaluated_point({"id": trial_id}, loss)

        def add_evaluated_point(self, parameters: dict, value: float, **_: Any) -> None:
            self.known[str(parameters["id"])] = float(value)

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            while self.jobs:
                job = self.jobs.pop(0)
                if job["id"] not in self.known:
                    self.live[trial_id] = job["id"]
                    return {"job": job}
            return Searcher.FINISHED

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            ours = self.live.pop(trial_id, None)
            if ours is not None and result and not error and "val_loss" in result:
                self.known[ours] = float(result["val_loss"])

    return RoundSearcher


@dataclass
class AxisTrials:
    """The axis' finished trials per family: analysis x, losses, and the seeds at each x."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    seeds: dict[tuple[str, float], list[int]]
    losses: dict[str, float]  # trial id -> val_loss (the Searcher's warm start)


def finished_trials(spec: SweepSpec, axis: str) -> AxisTrials:
    """What the store holds for the axis (every child run of the sweep's parent, the extended ones too)."""
    from analysis.compare import axis_points
    from analysis.data import AXIS_X, EBT, TPP, split_trials, tidy_trials
    from orchestrator.sweep.results import load_sweep_trials

    raw = load_sweep_trials(resolve_tracking_uri(spec.output_dir), spec.name)
    ok, _ = split_trials(tidy_trials(raw))
    pts = axis_points(ok, axis)
    rows = ok[ok["axis"] == axis]
    seeds: dict[tuple[str, float], list[int]] = {}
    for fam, x, seed in zip(rows["family"], rows[AXIS_X[axis]], rows["seed"], strict=True):
        seeds.setdefault((str(fam), float(x)), []).append(int(seed))
    x = {f: pts.loc[pts["family"] == f, "x"].to_numpy(float) for f in (EBT, TPP)}
    y = {f: pts.loc[pts["family"] == f, "y"].to_numpy(float) for f in (EBT, TPP)}
    losses = dict(zip(ok["trial_id"], ok["val_loss"].astype(float), strict=True))
    return AxisTrials(x, y, seeds, losses)


def trial_x(trial: PlannedTrial, axis: str) -> float:
    """The analysis' x of a planned trial: the tokens it trains (whole steps), or its batch size."""
    return float(trial.costs.tokens if axis == "data" else trial.config.train.global_batch_size)


def candidate_grid(spec: SweepSpec, s: ExtendSettings) -> list[int]:
    """The axis values a round may add: `points` log-spaced over the range (default: the axis' own span)."""
    values = getattr(spec.axes, s.axis).model_dump()[AXIS_FIELDS[s.axis]]
    lo, hi = s.range if s.range is not None else (min(values), max(values))
    return sorted({round(v) for v in np.geomspace(lo, hi, s.points)})


class Planner:
    """Turns (family, axis value, seed) into planned trials, once each, and knows each one's x and cost."""

    def __init__(self, spec: SweepSpec, s: ExtendSettings) -> None:
        self.spec, self.axis = spec, s.axis
        expansion = expand(spec)
        self.tuned = expansion.tuning.values if expansion.tuning is not None else None
        self.by_x: dict[tuple[str, float], int] = {}  # (family, analysis x) -> the axis value that gives it
        self.cost_at: dict[tuple[str, float], float] = {}
        for family in spec.families:
            for value in candidate_grid(spec, s):
                try:
                    t = extra_trial(spec, family, s.axis, value, spec.seeds[0], self.tuned)
                except SpecError:
                    continue  # a value with no valid trial (a batch the workers cannot split): no candidate
                self.by_x[(family, trial_x(t, s.axis))] = value
                self.cost_at[(family, trial_x(t, s.axis))] = t.costs.train_flops

    def grid(self) -> list[float]:
        return sorted({x for _, x in self.by_x})

    def cost(self, family: str, x: float) -> float:
        return self.cost_at.get((family, x), math.inf)

    def trial(self, family: str, x: float, seed: int) -> PlannedTrial:
        return extra_trial(self.spec, family, self.axis, self.by_x[(family, x)], seed, self.tuned)


def next_seed(trials: AxisTrials, family: str, x: float, taken: set[tuple[str, float, int]]) -> int:
    """The smallest seed not yet trained (or chosen this round) at (family, x)."""
    used = set(trials.seeds.get((family, x), [])) | {s for f, v, s in taken if f == family and v == x}
    return next(s for s in itertools.count() if s not in used)


def run_extend(
    spec: SweepSpec,
    s: ExtendSettings,
    *,
    address: str | None = None,
    max_failures: int = 2,
    progress: bool = True,
    launcher: str = "auto",
    echo: Callable[[str], None] = print,
) -> ExtendState:
    """The rounds (module docstring); returns the final state, also in extend.json."""
    from analysis.design import FAMILIES, next_round
    from orchestrator.sweep.runner import run_on_ray, start_stage

    state = ExtendState.load(spec, s.axis)
    planner = Planner(spec, s)
    grid = planner.grid()
    if not grid:
        raise ConfigError(f"sweep {spec.name}: no valid {s.axis} value in the adaptive range to add")
    uri = resolve_tracking_uri(spec.output_dir)

    def train(record: RoundRecord, known: dict[str, float]) -> None:
        """Trains the round's trials (`known`: the store's finished trials, the Searcher's warm start)."""
        trials = [planner.trial(t["family"], t["x"], t["seed"]) for t in record.trials]
        with start_stage(
            spec,
            trials,
            address=address,
            launcher=launcher,
            progress=progress,
            extra_tags={tags.EXTEND_ROUND: str(record.number)},
        ) as stage:
            if stage.pending:
                run_on_ray(
                    stage,
                    stage.units,
                    stage.pending,
                    max_failures,
                    None,
                    progress,
                    launcher,
                    label=f"extend-{record.number}",
                    searcher=round_searcher(known),
                )
        record.trained = True
        state.save(spec)
        if not record.logged:
            _log_round(uri, spec, state, record)
            record.logged = True
            state.save(spec)

    for record in state.rounds:
        if not (record.trained and record.logged):  # killed during this round: finish it first
            echo(f"round {record.number}: resuming its {len(record.trials)} trials")
            train(record, finished_trials(spec, s.axis).losses)
    while True:
        have = finished_trials(spec, s.axis)
        if any(have.x[f].size < 3 for f in FAMILIES):
            raise ConfigError(
                f"sweep {spec.name}: the {s.axis} axis needs 3 finished trials per family before "
                "`sweep extend` (run the sweep first: `ebtscale sweep run`)"
            )
        number = len(state.rounds) + 1
        r = next_round(
            have.x,
            have.y,
            grid,
            planner.cost,
            batch=s.batch,
            budget_left=s.budget_flops - state.spent,
            target_width=s.target_width,
            bootstrap=BOOTSTRAP,
            seed=number,
            **({"min_distinct": s.min_distinct} if s.min_distinct is not None else {}),
        )
        rel = [r.relative.value, r.relative.lo, r.relative.hi] if r.relative is not None else None
        if r.stop is not None:
            state.stop, state.final_width = r.stop, r.width
            state.save(spec)
            _log_stop(uri, spec, state)
            echo(f"stopped: {r.stop} (95% interval width {r.width:.3g}, {state.spent:.3g} FLOPs added)")
            return state
        taken: set[tuple[str, float, int]] = set()
        picked = []
        for c in r.chosen:
            cand = c.candidate
            seed = next_seed(have, cand.family, cand.x, taken)
            taken.add((cand.family, cand.x, seed))
            t = planner.trial(cand.family, cand.x, seed)
            picked.append(
                {
                    "name": t.name,
                    "id": t.id,
                    "family": cand.family,
                    "x": cand.x,
                    "seed": seed,
                    "kind": cand.kind,
                    "cost": cand.cost,
                    "width_before": c.width_before,
                    "width_after": c.width_after,
                }
            )
        record = RoundRecord(number, r.width, rel, r.chosen[-1].width_after, r.cost, picked)
        state.rounds.append(record)
        state.save(spec)  # before anything trains: a kill now resumes this very round
        echo(
            f"round {number}: width {r.width:.3g}, adding {len(picked)} trial(s) "
            f"({', '.join(p['name'] for p in picked)}), expected width after {record.expected_width:.3g}"
        )
        train(record, have.losses)


def _log_round(uri: str, spec: SweepSpec, state: ExtendState, record: RoundRecord) -> None:
    client = mlflow_client(uri)
    parent = spec.folder.parent_run_id()
    step = record.number
    if math.isfinite(record.width):
        client.log_metric(parent, "extend_width", record.width, step=step)
    client.log_metric(parent, "extend_expected_width", record.expected_width, step=step)
    client.log_metric(parent, "extend_flops", state.spent_through(step), step=step)
    client.log_dict(parent, asdict(record), f"{tags.EXTEND_ARTIFACT_DIR}/round-{step}.json")


def _log_stop(uri: str, spec: SweepSpec, state: ExtendState) -> None:
    client = mlflow_client(uri)
    parent = spec.folder.parent_run_id()
    if state.final_width is not None and math.isfinite(state.final_width):
        client.log_metric(parent, "extend_width", state.final_width, step=len(state.rounds) + 1)
    client.set_tag(parent, tags.EXTEND_STOP, state.stop or "")


def rounds_frame(spec: SweepSpec) -> Any:
    """extend.json as the report's rounds table (analysis/rounds.py: ROUND_COLUMNS), or None if none."""
    import pandas as pd

    if not spec.folder.extend_file.exists():
        return None
    data = json.loads(spec.folder.extend_file.read_text())
    rows, before = [], 0.0
    for r in data.get("rounds", []):
        added = ", ".join(f"{t['name']} ({t['kind']})" for t in r["trials"])
        rows.append(
            [r["number"], data["axis"], before, r["width"], r["expected_width"], r["flops"], added, ""]
        )
        before += r["flops"]
    if data.get("stop"):
        final = data.get("final_width")
        width = final if final is not None else math.nan
        rows.append([len(rows) + 1, data["axis"], before, width, math.nan, 0.0, "", data["stop"]])
    if not rows:
        return None
    from analysis.rounds import ROUND_COLUMNS

    return pd.DataFrame(rows, columns=list(ROUND_COLUMNS))
