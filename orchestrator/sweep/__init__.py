"""A scaling study: a spec and its expansion into planned trials (`spec.py`), the dry-run plan of size,
compute, memory and time (`plan.py`), training them on Ray Tune with exactly-once MLflow bookkeeping
(`runner.py`), reading them back as a table (`results.py`), the report's provenance and publishing
(`report.py`), and System-2 evaluation of trained EBTs (`think.py`). Torch is imported only where a model
runs (a trial on Ray, `think`); planning and driving a sweep never import it."""
