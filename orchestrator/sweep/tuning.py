"""The tuning stage (`ebtscale sweep tune`): per family and model size, a Ray Tune search over the spec's
`tune:` space with ASHA early stopping on the trials' validation loss, on the sweep's own trainer, Ray and
MLflow store. The space, the file format and how tuned values reach the sweep: tune_space.py.

- The configurations are drawn up front with Tune's own domains (`tune.loguniform`, `tune.choice`) from a
  seeded generator, one stream per knob: the same spec samples the same configurations, so a tuning trial has
  a stable id like any sweep trial, its MLflow run is created before training (a child of the sweep's parent
  run, tagged `tags.STAGE`), and a re-run skips what is done and resumes what was interrupted.
  Every family and size draws the same lr values (paired comparisons).
- One Tune experiment per family and size, so that ASHA compares like with like. A tuning trial trains the
  size's config on `budget` tokens and reports its validation loss `reports` times; ASHA stops the worse
  ones at each rung (grace `grace_reports`, keeping 1/`reduction_factor`). A stopped trial is final
  (`TrialStatus.STOPPED`) and is not trained again.
- The choice per size: the lowest final validation loss among the trials that trained their whole budget.
  tuning.json holds every sampled configuration with its status and losses (the evidence), the choice,
  and a warning where the chosen value sits at the edge of its searched range. It is rewritten after each
  size; `complete` is set when every size has a choice.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

from model.family_ids import FAMILY_IDS
from orchestrator import tags
from orchestrator.config import ConfigError, TrialConfig, deep_merge
from orchestrator.sweep.expand import PlannedTrial, TrialCosts, TuningState, trial_shape, tuning_state
from orchestrator.sweep.runner import Stage, TrialUnit, close_done_runs, run_on_ray, start_stage
from orchestrator.sweep.spec import SweepSpec
from orchestrator.sweep.tune_space import (
    TUNING_AXIS,
    FamilySpace,
    LogUniform,
    TuneSpec,
    at_edge,
    knob_label,
    knob_patch,
)
from orchestrator.trial_dir import (
    TrialResult,
    TrialStatus,
    atomic_write_json,
    perplexity,
    stopped_by_search,
)


@dataclass(frozen=True)
class SizeSearch:
    """The search of one family at one size: its base config and one planned trial per distinct sample."""

    key: str
    family: str
    base: TrialConfig
    trials: list[PlannedTrial]
    values: dict[str, dict[str, float]]  # trial id -> the knob values it trains


def sample_space(space: FamilySpace, n: int, seed: int) -> list[dict[str, float]]:
    """n configurations drawn with Tune's domains, one seeded stream per knob (so a knob's draws do not
    depend on which other knobs are searched: both families get the same lr values)."""
    import numpy as np
    from ray import tune

    columns = {}
    for knob, dim in space.knobs().items():
        rng = np.random.RandomState(zlib.crc32(f"{seed}:{knob}".encode()))
        domain = tune.loguniform(*dim.bounds) if isinstance(dim, LogUniform) else tune.choice(list(dim))
        columns[knob] = [float(domain.sample(random_state=rng)) for _ in range(n)]
    return [{knob: values[i] for knob, values in columns.items()} for i in range(n)]


def tuning_config(base: TrialConfig, tune: TuneSpec, values: dict[str, float]) -> TrialConfig:
    """The size's config with the sampled values, trained on the tuning budget in `reports` equal parts
    (each ending in a validation loss and a checkpoint)."""
    steps_per_report = max(
        1, tune.budget.tokens_for(base.train.tokens) // base.tokens_per_step // tune.reports
    )
    steps = steps_per_report * tune.reports
    budget = {
        "train": {
            "tokens": steps * base.tokens_per_step,
            "eval_every": steps_per_report,
            "checkpoint_every": steps_per_report,
        }
    }
    data = deep_merge(deep_merge(base.model_dump(mode="json"), budget), knob_patch(values))
    return TrialConfig.model_validate(data)


def plan_searches(spec: SweepSpec, state: TuningState | None = None) -> list[SizeSearch]:
    """Every family x size search of the spec, its trials planned and placed (`SweepDir.tuning_trial`)."""
    tune = spec.tune
    if tune is None:
        raise ConfigError(f"sweep spec {spec.name} has no tune: block")
    state = state or tuning_state(spec)
    searches = []
    for key, base in state.sizes.items():
        family = base.model.family
        trials, values = [], {}
        for i, sample in enumerate(sample_space(tune.space[family], tune.num_samples, tune.seed)):
            cfg = tuning_config(base, tune, sample)
            trial_id = cfg.config_hash()
            if trial_id in values:  # a repeated draw (small lists): trained once
                continue
            shape = f"{trial_shape(cfg, TUNING_AXIS)}-{i}-{knob_label(sample)}"
            name = f"tune-{FAMILY_IDS[family].tag}-{shape}"
            folder = spec.folder.tuning_trial(name, trial_id).path
            config = cfg.model_copy(
                update={"name": name, "output_dir": spec.output_dir, "trial_dir": str(folder)}
            )
            trials.append(
                PlannedTrial(
                    id=trial_id,
                    name=name,
                    sweep=spec.name,
                    family=family,
                    axis=TUNING_AXIS,
                    seed=cfg.train.seed,
                    axis_value=float(i),
                    flops_budget=None,
                    source=f"tune.space.{family}",
                    shape=shape,
                    config=config,
                    costs=TrialCosts.of(config),
                )
            )
            values[trial_id] = sample
        searches.append(SizeSearch(key, family, base, trials, values))
    return searches


# ------------------------------------------------------------------------------------------------- choice


def choose(search: SizeSearch, tune: TuneSpec) -> dict[str, Any]:
    """The size's evidence and choice from its trials' folders: every sample with its outcome, the best
    finished one, and edge warnings."""
    rows = []
    for t in search.trials:
        folder = t.config.folder
        status = folder.status()
        result = folder.read_result()
        rows.append(
            {
                "id": t.id,
                "name": t.name,
                "values": search.values[t.id],
                "status": str(status["status"]),
                "val_loss": result.final_val_loss if result is not None else None,
                "steps": result.steps if result is not None else None,
                "total_steps": t.config.total_steps,
            }
        )
    finished = [r for r in rows if r["status"] == TrialStatus.FINISHED and r["val_loss"] is not None]
    best = min(finished, key=lambda r: r["val_loss"]) if finished else None
    space = tune.space[search.family]
    edges = []
    if best is not None:
        for knob, dim in space.knobs().items():
            side = at_edge(dim, best["values"][knob])
            if side is not None:
                edges.append({"knob": knob, "side": side, "value": best["values"][knob]})
    cfg = search.base
    return {
        "family": search.family,
        "d_model": cfg.model.d_model,
        "n_layers": cfg.model.n_layers,
        "n_params": search.trials[0].costs.params_non_embedding,  # one model per search
        "space": space.model_dump(mode="json", exclude_none=True),
        "trials": rows,
        "counts": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
        "chosen": None
        if best is None
        else {"values": best["values"], "val_loss": best["val_loss"], "id": best["id"]},
        "edges": edges,
    }


def write_tuning_file(state: TuningState, sizes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """tuning.json: every size's evidence; `chosen` (what `expand` applies) once every size has a choice."""
    complete = len(sizes) == len(state.sizes) and all(s["chosen"] is not None for s in sizes.values())
    payload = {
        "fingerprint": state.fingerprint,
        "complete": complete,
        "sizes": sizes,
        "chosen": {
            key: {
                "values": s["chosen"]["values"],
                "family": s["family"],
                "d_model": s["d_model"],
                "n_layers": s["n_layers"],
                "n_params": s["n_params"],
            }
            for key, s in sizes.items()
            if s["chosen"] is not None
        },
    }
    state.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state.path, payload, indent=2)
    return payload


def read_tuning_file(spec: SweepSpec) -> dict[str, Any] | None:
    """tuning.json as written (for the report), or None; no expansion of the spec needed."""
    path = spec.folder.tuning_file
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------- run


def run_tuning(
    spec: SweepSpec,
    address: str | None = None,
    max_failures: int = 2,
    max_concurrent: int | None = None,
    progress: bool = True,
    launcher: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Run (or resume) every search of the spec's tuning stage; returns tuning.json's content. The stage
    starts as the sweep does (`runner.start_stage`: memory check, the sweep's driver lock, MLflow runs, Ray).
    `max_concurrent` (trials of a search at once) overrides the spec's `tune.max_concurrent`."""
    tune = spec.tune
    if tune is None:
        raise ConfigError(f"sweep spec {spec.name} has no tune: block: nothing to tune")
    state = tuning_state(spec)
    searches = plan_searches(spec, state)
    everything = [t for s in searches for t in s.trials]
    sizes: dict[str, dict[str, Any]] = {}
    with start_stage(
        spec,
        everything,
        address=address,
        launcher=launcher,
        force=force,
        progress=progress,
        extra_tags={tags.STAGE: tags.STAGE_TUNING},
    ) as stage:
        for search in searches:
            mine = [u for u in stage.units if u.id in search.values]
            todo = [u for u in mine if not u.folder.status()["status"].final]
            if todo:
                results = run_on_ray(
                    stage,
                    mine,
                    todo,
                    max_failures,
                    max_concurrent or tune.max_concurrent,
                    progress,
                    launcher,
                    scheduler=_asha(tune),
                    label=f"search-{search.key.replace(':', '-')}",
                )
                _settle_outcomes(stage, todo, results)
            sizes[search.key] = choose(search, tune)
            write_tuning_file(state, sizes)
        return write_tuning_file(state, sizes)


def _asha(tune: TuneSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="report",
        metric="val_loss",
        mode="min",
        max_t=tune.reports,
        grace_period=tune.grace_reports,
        reduction_factor=tune.reduction_factor,
    )


def stopped_result(report: dict[str, Any], config: TrialConfig) -> TrialResult | None:
    """The outcome of a trial ASHA stopped, from its last report to Tune (`runner._train`'s `on_eval`): None
    when the report is no early stop (the trial trained its whole budget, or never reported)."""
    steps = int(report.get("step") or 0)
    if steps >= config.total_steps or steps == 0:
        return None
    loss = report.get("val_loss")
    loss = loss if loss is not None and math.isfinite(loss) else None
    return TrialResult(
        status=TrialStatus.STOPPED,
        reason=stopped_by_search(steps),
        steps=steps,
        tokens=steps * config.tokens_per_step,
        final_val_loss=loss,
        final_val_perplexity=perplexity(loss) if loss is not None else None,
        train_time_s=float(report.get("train_time_s") or 0.0),
    )


def _settle_outcomes(stage: Stage, units: list[TrialUnit], results: Any) -> None:
    """Settle every trial of a finished Tune experiment. A trial ASHA stopped is final: where its own
    process did not get to write result.json (a Ray Train trial is stopped by ending its workers; the actor
    of a search's last trial is ended without waiting for it), it is written here from its last report.
    Then every run whose trial has an outcome but was left open is closed with that outcome."""
    by_id = {}
    for result in results:
        job = (result.config or {}).get("job") or {}
        if job.get("id"):
            by_id[job["id"]] = result
    for unit in units:
        folder = unit.folder
        result = by_id.get(unit.id)
        if folder.result.is_file() or result is None or result.error is not None:
            continue
        stopped = stopped_result(result.metrics or {}, unit.config)
        if stopped is not None:
            stopped.save(folder.result)
    close_done_runs(stage.tracking_uri, stage.spec.name, units, stage.parent_run_id)


def tuning_frame(payload: dict[str, Any]) -> Any:
    """tuning.json as the report's table (analysis/tuning.py, TUNING_COLUMNS): a row per trial and knob."""
    import pandas as pd

    rows = []
    for size in payload["sizes"].values():
        chosen_id = (size["chosen"] or {}).get("id")
        edges = {e["knob"]: e["side"] for e in size["edges"]}
        for trial in size["trials"]:
            for knob, value in trial["values"].items():
                rows.append(
                    {
                        "family": size["family"],
                        "size": f"d{size['d_model']} L{size['n_layers']}",
                        "trial": trial["name"],
                        "status": trial["status"],
                        "val_loss": trial["val_loss"],
                        "steps": trial["steps"],
                        "total_steps": trial["total_steps"],
                        "knob": knob,
                        "value": value,
                        "chosen": trial["id"] == chosen_id,
                        "edge": edges.get(knob, "") if trial["id"] == chosen_id else "",
                    }
                )
    return pd.DataFrame(rows)
