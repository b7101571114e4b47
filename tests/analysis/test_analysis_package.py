"""The package's lazy exports (PEP 562): every name resolves to its module's object; others are an error."""

from __future__ import annotations

import importlib

import pytest

import analysis


@pytest.mark.parametrize("name", analysis.__all__)
def test_every_exported_name_is_its_module_s_object(name):
    module = importlib.import_module(analysis._EXPORTS[name])
    assert getattr(analysis, name) is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match=r"^module 'analysis' has no attribute 'fit_everything'$"):
        analysis.fit_everything  # noqa: B018
