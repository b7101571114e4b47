"""`ebtscale fit`: fit one scaling law to any table (the logic: analysis/fit.py, `fit_law`). User errors
print one line and exit with code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from analysis.errors import AnalysisError
from analysis.laws import FORMS
from analysis.options import DEFAULT_OPTIONS

if TYPE_CHECKING:  # pandas and scipy load on first use: `ebtscale --help` should not pay for them
    import pandas as pd

    from analysis.fit import FitResult

err_console = Console(stderr=True)


class UsageError(Exception):
    """Bad command-line input; the message is printed as the one-line error."""


def _fail(message: str) -> typer.Exit:
    """The one-line error of this command: rich's (bold red on a terminal), not `common.fail`'s, so its
    output stays what it was before it joined the other commands."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def read_table(path: Path) -> pd.DataFrame:
    """CSV or parquet by extension."""
    import pandas as pd

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as err:  # any reader failure is the file's problem, reported in one line
        raise UsageError(f"{path}: cannot read as {suffix[1:]}: {err}".splitlines()[0]) from None
    raise UsageError(f"{path}: unsupported extension {suffix!r} (use .csv or .parquet)")


def parse_x(specs: list[str], form: str) -> list[tuple[str, str]]:
    """['N=n_params', 'D=tokens'] -> [('N', 'n_params'), ('D', 'tokens')], ordered as the law's variables.
    A single-variable law also accepts a bare column name."""
    pairs = []
    for spec in specs:
        name, sep, col = spec.partition("=")
        name, col = name.strip(), col.strip()
        if not sep:
            name, col = "x", name
        if not name or not col:
            raise UsageError(f"--x expects NAME=COLUMN, got {spec!r}")
        pairs.append((name, col))
    if form == "chinchilla":
        names = sorted(n for n, _ in pairs)
        if names != ["D", "N"]:
            raise UsageError(f"--form chinchilla needs exactly --x N=COLUMN and --x D=COLUMN, got {specs}")
        return sorted(pairs, key=lambda p: p[0] != "N")
    if len(pairs) != 1:
        raise UsageError(f"--form {form} needs exactly one --x, got {len(pairs)}")
    return pairs


def _apply_where(df: pd.DataFrame, where: list[str], path: Path) -> pd.DataFrame:
    for cond in where:
        col, sep, value = cond.partition("=")
        if not sep:
            raise UsageError(f"--where expects COLUMN=VALUE, got {cond!r}")
        if col not in df.columns:
            raise UsageError(f"--where: column {col!r} not in {path.name}")
        df = df[df[col].astype(str).str.strip() == value.strip()]
    if df.empty:
        raise UsageError(f"no rows of {path.name} match {' and '.join(where)}")
    return df


def _print_table(result: FitResult, label: str) -> None:
    table = Table(title=f"{result.form} law: {label}", title_justify="left")
    for col in ("parameter", "value", f"{result.level:.0%} CI lo", "hi"):
        table.add_column(col, justify="right" if col != "parameter" else "left")
    for name, est in [*result.params.items(), *result.derived.items()]:
        table.add_row(name, f"{est.value:.5g}", f"{est.lo:.5g}", f"{est.hi:.5g}")
    Console().print(table)
    Console().print(
        f"R² (log) = {result.r2_log:.4f}   points = {result.n_points}   "
        f"Huber objective = {result.objective:.4g}   "
        f"bootstrap = {result.n_boot_valid}/{result.n_boot} usable resamples"
    )


def fit_command(
    data: Annotated[Path, typer.Argument(help="Table to fit: .csv or .parquet, one row per point.")],
    x: Annotated[
        list[str],
        typer.Option("--x", help="NAME=COLUMN of an input (repeatable); chinchilla needs N=... and D=..."),
    ],
    y: Annotated[str, typer.Option("--y", help="Column to fit (e.g. val_loss).")] = DEFAULT_OPTIONS.y,
    form: Annotated[
        str, typer.Option("--form", help="power | saturating | chinchilla")
    ] = DEFAULT_OPTIONS.form,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", help="Bootstrap resamples (0: none).")
    ] = DEFAULT_OPTIONS.bootstrap,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = DEFAULT_OPTIONS.seed,
    level: Annotated[
        float, typer.Option("--level", help="Confidence level of the intervals.")
    ] = DEFAULT_OPTIONS.level,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Keep rows with COLUMN=VALUE (repeatable), e.g. family=ebt."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Fit a scaling law (Huber loss in log space, multi-start L-BFGS) with bootstrap confidence intervals."""
    import pandas as pd

    from analysis.data import numeric_column
    from analysis.fit import fit_law

    try:
        if form not in FORMS:
            raise UsageError(f"unknown --form {form!r} (use {', '.join(FORMS)})")
        pairs = parse_x(x, form)
        df = _apply_where(read_table(data), where or [], data)
        for col in [c for _, c in pairs] + [y]:
            if col not in df.columns:
                raise UsageError(
                    f"column {col!r} not in {data.name} (columns: {', '.join(map(str, df.columns))})"
                )
        X = pd.concat([numeric_column(df[c], c) for _, c in pairs], axis=1).to_numpy()
        values = numeric_column(df[y], y).to_numpy()
        result = fit_law(
            X,
            values,
            form,
            x_names=[c for _, c in pairs],
            y_name=y,
            bootstrap=bootstrap,
            seed=seed,
            level=level,
        )
    except (UsageError, AnalysisError) as err:
        raise _fail(str(err)) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        label = f"{y} vs " + ", ".join(f"{n}={c}" for n, c in pairs) + f" ({data.name})"
        _print_table(result, label)
