"""Scaling-law analysis of a tidy trials table: fits with bootstrap CIs, EBT vs Transformer++ comparison,
and the HTML/Markdown report. Knows nothing about training, Ray, MLflow or DeepSpeed; its command,
`ebtscale fit`, lives with the others in orchestrator/cli/.

    data.py      the tidy trials and thinking tables       options.py   AnalysisOptions: what to fit, how
    laws.py      laws as data, their parser and objective  fit.py       fits with bootstrap intervals
    optim.py     the batched L-BFGS under the fits         isoflop.py   compute-optimal allocation
    compare.py   EBT vs Transformer++ per axis             backtest.py  held-out extrapolation checks
    thinking.py  System-2 perplexity reduction             tuning.py    the tuning section
    report.py    the report (HTML, Markdown, JSON)         plots.py     its figures
    identify.py  identifiability flags of a fit            intervals.py percentile intervals of draws
    claims.py    the paper's numbers beside ours           learning.py  did every fitted trial learn
    errors.py    the user-facing exceptions                 text.py      how numbers are written

Names are imported lazily (PEP 562), so the command line's `import analysis.options` (the defaults of
`ebtscale fit` and `ebtscale report`) stays cheap."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "tidy_trials": "analysis.data",
    "tidy_thinking": "analysis.data",
    "split_trials": "analysis.data",
    "AXIS_X": "analysis.data",
    "AnalysisError": "analysis.errors",
    "AnalysisOptions": "analysis.options",
    "FitError": "analysis.errors",
    "SchemaError": "analysis.errors",
    "FitResult": "analysis.fit",
    "ParamEstimate": "analysis.fit",
    "fit_law": "analysis.fit",
    "fit_power": "analysis.fit",
    "fit_saturating": "analysis.fit",
    "fit_chinchilla": "analysis.fit",
    "compute_optimal": "analysis.fit",
    "isoflop_allocation": "analysis.isoflop",
    "compare_axis": "analysis.compare",
    "compare_rates": "analysis.compare",
    "extrapolate": "analysis.compare",
    "crossover": "analysis.compare",
    "system2": "analysis.thinking",
    "analyse": "analysis.report",
    "write_report": "analysis.report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
