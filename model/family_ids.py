"""The model families of the study and what each is called where: the one place their names are written.

Everything that names a family derives from `FAMILY_IDS`: the config's allowed `model.family` values
(model/config.py), each family's costs and build (model/family.py, which checks it has one `Family` per
id), the sweep's trial-name tags, which tuning knobs a family has (orchestrator/sweep/tune_space.py: a knob
under a family's own config section is that family's alone), and the report's labels (analysis/data.py).

Imports nothing, so that the config can depend on it: model/family.py cannot be that owner, since it builds
the models and they import the config. Adding a family: its model module, a `FamilyId` here, and its
`Family` in model/family.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyId:
    """One family's names. `name`: the config's `model.family` value (also the MLflow tag, the tuning.json
    key and the trials table's `family`); `tag`: its short trial-name prefix; `label`: how reports write it;
    `section`: the ModelConfig field holding its own hyper-parameters (None: it has only the shared ones)."""

    name: str
    tag: str
    label: str
    section: str | None = None


TRANSFORMER_PP = FamilyId("transformer_pp", tag="tpp", label="Transformer++")
EBT = FamilyId("ebt", tag="ebt", label="EBT", section="ebt")

FAMILY_IDS: dict[str, FamilyId] = {f.name: f for f in (TRANSFORMER_PP, EBT)}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILY_IDS)
