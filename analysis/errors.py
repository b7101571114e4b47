"""Exceptions of the analysis package: user-facing, so their messages say what is wrong with the input."""

from __future__ import annotations


class AnalysisError(ValueError):
    """Base class: the input cannot be analysed as given (the message says why)."""


class SchemaError(AnalysisError):
    """The trials (or thinking) table lacks columns or holds values that cannot be read."""


class FitError(AnalysisError):
    """The data cannot identify the requested law (too few points, one distinct x, non-positive values...)."""
