"""A scaling study: a spec and its expansion into planned trials (`spec.py`), the dry-run plan of size,
compute, memory and time (`plan.py`), training them on Ray Tune with exactly-once MLflow bookkeeping
(`runner.py`), reading them back as a table (`results.py`), and the report's provenance and publishing
(`report.py`). Torch is imported only where a model runs (a trial on Ray); planning and driving a sweep
never import it. (System-2 evaluation of trained EBTs is not a sweep: orchestrator/thinking/.)"""
