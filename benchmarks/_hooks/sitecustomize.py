"""Loaded by Python at start-up when benchmarks/_hooks is on PYTHONPATH: bench_orchestration.py sets that
(and EBTSCALE_BENCH_TIMELINE) only for the sweep it launches. Installs the timeline hooks of
ebtscale_timeline.py; does nothing without EBTSCALE_BENCH_TIMELINE, and never raises."""

import os

if os.environ.get("EBTSCALE_BENCH_TIMELINE"):
    try:
        import ebtscale_timeline

        ebtscale_timeline.install()
    except Exception:  # a benchmark hook must never break the process it is loaded into
        pass
