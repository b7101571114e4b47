"""The families' names (model/family_ids.py): every family the registry names is a value the config accepts,
and no other; tags and labels tell families apart; a family's own section is a field of the model config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from model.config import ModelConfig
from model.family_ids import FAMILY_IDS, FAMILY_NAMES, FamilyId


@pytest.mark.parametrize("family", FAMILY_IDS.values(), ids=FAMILY_NAMES)
def test_every_named_family_is_a_config_value_with_a_tag_and_a_label(family: FamilyId) -> None:
    assert ModelConfig(family=family.name).family == family.name
    assert family.tag and family.label and FAMILY_IDS[family.name] is family


def test_the_config_accepts_the_registrys_names_and_no_other() -> None:
    with pytest.raises(ValidationError) as err:
        ModelConfig(family="rnn")
    assert all(repr(name) in str(err.value) for name in FAMILY_NAMES)
    assert ModelConfig().family == "transformer_pp"  # the baseline stays the default


def test_tags_and_labels_are_unique() -> None:
    """Trial names start with the tag and reports show the label: two families sharing one are confused."""
    families = list(FAMILY_IDS.values())
    assert len({f.tag for f in families}) == len({f.label for f in families}) == len(families) >= 2
    assert {f.name: f.tag for f in families} == {"transformer_pp": "tpp", "ebt": "ebt"}


def test_a_familys_own_section_is_a_model_config_field() -> None:
    """A tuning knob under `model.<section>` is that family's alone (orchestrator/sweep/tune_space.py)."""
    sections = {f.name: f.section for f in FAMILY_IDS.values() if f.section is not None}
    assert sections == {"ebt": "ebt"}
    assert set(sections.values()) <= set(ModelConfig.model_fields)
