"""The `tune:` block of a sweep spec, and the file its search leaves behind (`tuning.json`). Ray-free.

A spec's `tune:` block asks for a search per family and model size before the scaling sweep:

    tune:
      num_samples: 8              # configurations sampled per family and size
      budget: {fraction: 0.25}    # a tuning trial trains this fraction of the size's tokens (or {tokens: N})
      sizes: all                  # every distinct model shape of the sweep, or a list of d_model values
      reports: 6                  # validation reports per tuning trial: the rungs ASHA decides on
      grace_reports: 1            # ASHA: no trial is stopped before this many reports
      reduction_factor: 3         # ASHA: keep the best 1/3 at each rung
      seed: 0                     # the same seed samples the same configurations (a re-run resumes)
      space:
        transformer_pp: {lr: {loguniform: [1.0e-3, 3.0e-2]}}
        ebt:
          lr: {loguniform: [1.0e-3, 3.0e-2]}
          alpha: [50, 500]                    # a list is a choice
          mcmc_steps: [2, 3]
          alpha_lr_multiplier: [500, 1500]

The search itself (Ray Tune + ASHA on the same trainer) is `tuning.py`; what it chose is `tuning.json` in the
sweep's folder, which `expand` reads back (`TunedValues`) so that `sweep plan` and `sweep run` train the tuned
values. Sizes left out of `sizes` get their lr from a power law in N fitted across the tuned sizes (the
usual lr-vs-size rule: one exponent, measured rather than assumed; lr_law.LrPowerLaw, the law a spec's
rules.lr declares), and their other knobs from the tuned size nearest in N (the EBT's step size tracks the
energy landscape's scale, set by the vocabulary, not the width).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.family_ids import FAMILY_IDS, FAMILY_NAMES
from orchestrator.sweep.lr_law import LrPowerLaw

TUNING_AXIS = "tune"  # PlannedTrial.axis of a tuning trial

# knob -> (trial config path, integer-valued). Which families have a knob follows from its path
# (`knob_families`), so a new family gets the shared knobs and its own section's without an entry here.
KNOBS: dict[str, tuple[tuple[str, ...], bool]] = {
    "lr": (("optim", "lr"), False),
    "alpha": (("model", "ebt", "step_size"), False),
    "mcmc_steps": (("model", "ebt", "mcmc_steps"), True),
    "alpha_lr_multiplier": (("model", "ebt", "step_size_lr_multiplier"), False),
}
SHORT_NAMES = {"lr": "lr", "alpha": "a", "mcmc_steps": "K", "alpha_lr_multiplier": "am"}  # in trial names
EDGE_FRACTION = 0.15  # a chosen loguniform value within this share of the log-range's ends is "at the edge"

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LogUniform(_Model):
    """Values drawn log-uniformly from [low, high]."""

    loguniform: tuple[PosFloat, PosFloat]

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        low, high = self.loguniform
        if not low < high:
            raise ValueError(f"loguniform needs low < high, got [{low:g}, {high:g}]")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return self.loguniform


Choice = Annotated[list[PosFloat], Field(min_length=1)]
Dimension = LogUniform | Choice


def dimension_bounds(dim: Dimension) -> tuple[float, float]:
    return dim.bounds if isinstance(dim, LogUniform) else (min(dim), max(dim))


class FamilySpace(_Model):
    """The knobs searched for one family (absent: kept at the spec's value)."""

    lr: Dimension | None = None
    alpha: Dimension | None = None
    mcmc_steps: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)] | None = None
    alpha_lr_multiplier: Dimension | None = None

    def knobs(self) -> dict[str, Dimension]:
        return {k: v for k in KNOBS if (v := getattr(self, k)) is not None}


class TokenBudget(_Model):
    tokens: Annotated[int, Field(gt=0)] | None = None
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None

    @model_validator(mode="after")
    def _one(self) -> TokenBudget:
        if (self.tokens is None) == (self.fraction is None):
            raise ValueError("give exactly one of tokens or fraction")
        return self

    def tokens_for(self, size_tokens: int) -> int:
        return self.tokens if self.tokens is not None else max(1, round(size_tokens * self.fraction))


class TuneSpec(_Model):
    space: Annotated[dict[str, FamilySpace], Field(min_length=1)]
    budget: TokenBudget = TokenBudget(fraction=0.25)
    num_samples: Annotated[int, Field(ge=1, le=1000)] = 8
    sizes: Literal["all"] | Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = "all"
    reports: Annotated[int, Field(ge=1, le=1000)] = 6
    grace_reports: Annotated[int, Field(ge=1)] = 1
    reduction_factor: Annotated[float, Field(ge=2)] = 3
    seed: Annotated[int, Field(ge=0)] = 0
    # trials of one search at once (default: as many as fit). ASHA stops a trial against the trials that
    # reached its rung before it, so with several at once the stops, and the choice, depend on timing; with
    # 1 they follow the sample order and a re-run on any machine chooses the same values.
    max_concurrent: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _check(self) -> TuneSpec:
        if self.grace_reports > self.reports:
            raise ValueError(f"grace_reports ({self.grace_reports}) exceeds reports ({self.reports})")
        return self

    def fingerprint(self, sizes: dict[str, Any]) -> str:
        """Identifies what a search was asked (this block and the configs of the sizes it tunes): a
        tuning.json written for another question is stale and is not applied."""
        asked = self.model_dump(mode="json", exclude={"max_concurrent"})  # how it runs, not what it asks
        payload = json.dumps({"tune": asked, "sizes": sizes}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def knob_families(knob: str) -> tuple[str, ...]:
    """The families that have a knob: a knob in a family's own model config section (`FamilyId.section`,
    model/family_ids.py: `model.ebt.*`) is that family's alone; any other (`optim.lr`) every family has."""
    path = KNOBS[knob][0]
    owners = tuple(f.name for f in FAMILY_IDS.values() if f.section and path[:2] == ("model", f.section))
    return owners or FAMILY_NAMES


def family_problems(tune: TuneSpec, families: list[str]) -> list[tuple[tuple[str | int, ...], str]]:
    """(field path, reason) for knobs a family does not have and families the sweep does not train."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for family, space in tune.space.items():
        if family not in families:
            problems.append((("tune", "space", family), f"family not in families {families}"))
            continue
        for knob in space.knobs():
            if family not in knob_families(knob):
                problems.append((("tune", "space", family, knob), f"the {family} family has no {knob}"))
    return problems


def knob_patch(values: dict[str, float]) -> dict[str, Any]:
    """{'lr': 3e-3, 'alpha': 50} -> {'optim': {'lr': 3e-3}, 'model': {'ebt': {'step_size': 50}}}."""
    patch: dict[str, Any] = {}
    for knob, value in values.items():
        path, integer = KNOBS[knob]
        node = patch
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = int(value) if integer else float(value)
    return patch


def knob_label(values: dict[str, float]) -> str:
    """A short, readable name part: `lr3.1e-03-a120`."""
    parts = []
    for knob, value in values.items():
        whole = KNOBS[knob][1] or (value >= 1 and float(value).is_integer())
        text = str(int(value)) if whole else f"{value:.2g}"
        parts.append(f"{SHORT_NAMES[knob]}{text}")
    return "-".join(parts)


def at_edge(dim: Dimension, value: float) -> str | None:
    """'low'/'high' when the chosen value sits at that end of the searched range (a list: its smallest or
    largest entry; a loguniform range: the outer EDGE_FRACTION of its log-width), else None."""
    low, high = dimension_bounds(dim)
    if low == high:
        return None
    if isinstance(dim, LogUniform):
        position = math.log(value / low) / math.log(high / low)
        return "low" if position < EDGE_FRACTION else "high" if position > 1 - EDGE_FRACTION else None
    return "low" if value == low else "high" if value == high else None


# ------------------------------------------------------------------------------------------ tuning.json


def size_key(family: str, d_model: int, n_layers: int) -> str:
    return f"{family}:d{d_model}:L{n_layers}"


@dataclass(frozen=True)
class Tuned:
    """The values one trial gets from tuning, and whether they were tuned at its size or carried to it."""

    values: dict[str, float]
    how: str  # "tuned" | "carried"
    from_size: str

    def describe(self) -> str:
        return f"{knob_label(self.values)} ({self.how})"


@dataclass(frozen=True)
class TunedValues:
    """What a finished search chose, per family and size (`tuning.json`'s `chosen`), applied by `expand`."""

    fingerprint: str
    chosen: dict[str, dict[str, Any]]  # size key -> {"values", "n_params", "family", "d_model", "n_layers"}

    @staticmethod
    def load(path: Path) -> TunedValues | None:
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        if not data.get("complete"):
            return None
        return TunedValues(data["fingerprint"], data["chosen"])

    def for_trial(self, family: str, d_model: int, n_layers: int, n_params: int) -> Tuned | None:
        """A tuned size's own values; another size of the family gets them carried (see the module doc)."""
        key = size_key(family, d_model, n_layers)
        if key in self.chosen:
            return Tuned(dict(self.chosen[key]["values"]), "tuned", key)
        mine = [(k, c) for k, c in self.chosen.items() if c["family"] == family]
        if not mine:
            return None
        nearest_key, nearest = min(mine, key=lambda kc: abs(math.log(kc[1]["n_params"] / n_params)))
        values = dict(nearest["values"])
        if "lr" in values and len(mine) >= 2:
            values["lr"] = power_law_lr([(c["n_params"], c["values"]["lr"]) for _k, c in mine], n_params)
        return Tuned(values, "carried", nearest_key)


def power_law_lr(points: list[tuple[int, float]], n_params: int) -> float:
    """lr at N of the lr law fitted through the tuned sizes' (N, lr): the law a spec's rules.lr declares."""
    return LrPowerLaw.fit(points).at(n_params)
