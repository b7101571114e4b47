"""`ebtscale`: every command of the command line. Thin: each command parses its arguments, calls one library
function and prints; errors a user can cause become one line on stderr with exit code 2 (`common.fail`).

    train.py   ebtscale train            sweep.py   ebtscale sweep plan|run|status|export
    think.py   ebtscale think            report.py  ebtscale report
    fit.py     ebtscale fit              demo.py    ebtscale demo
    jobs.py    ebtscale submit, ebtscale jobs ...
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

import typer

from orchestrator.cli.demo import demo
from orchestrator.cli.fit import fit_command
from orchestrator.cli.jobs import jobs_app, submit_command
from orchestrator.cli.report import report
from orchestrator.cli.sweep import sweep_app
from orchestrator.cli.think import think
from orchestrator.cli.train import parse_overrides, train

app = typer.Typer(
    name="ebtscale",
    help="Scaling studies of Energy-Based Transformers vs Transformer++ on Ray, DeepSpeed and MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(train)
app.add_typer(sweep_app, name="sweep")
app.command()(think)
app.command()(report)
app.command()(demo)
app.command("fit", help="Fit a scaling law to any table (CSV/parquet) with bootstrap CIs.")(fit_command)
app.command("submit")(submit_command)
app.add_typer(jobs_app, name="jobs")

__all__ = ["app", "main", "parse_overrides"]


def main() -> None:
    """The `ebtscale` command. It exits as Python does, minus the final clean-up: non-daemon threads are
    joined and every atexit handler runs (Ray's shutdown, MLflow's, logging's flush), then the process ends
    without tearing down its modules one by one. With Ray and MLflow loaded that teardown took ~1.2 s of
    every command and frees nothing the OS does not (benchmarks/NOTES.md). Other exceptions propagate."""
    try:
        app()
    except SystemExit as stop:
        _exit_without_teardown(stop)


def _exit_without_teardown(stop: SystemExit) -> NoReturn:
    join_threads = getattr(threading, "_shutdown", None)  # what the interpreter calls first at exit
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # and second
    if join_threads is None or run_exit_handlers is None:  # a Python without them: the usual exit
        raise stop
    code = stop.code
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    join_threads()
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
