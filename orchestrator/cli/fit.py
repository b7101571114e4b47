"""`ebtscale fit`: fit one scaling law to any table (the logic: analysis/fit.py, `fit_law`). User errors
print one line and exit with code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from analysis.errors import AnalysisError
from analysis.laws import FORMS
from analysis.options import DEFAULT_OPTIONS
from analysis.text import pct

if TYPE_CHECKING:  # pandas and scipy load on first use: `ebtscale --help` should not pay for them
    import numpy as np
    import pandas as pd

    from analysis.backtest import Backtest
    from analysis.fit import FitResult
    from analysis.laws import Law

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


def parse_x(specs: list[str], law: Law) -> list[tuple[str, str]]:
    """['N=n_params', 'D=tokens'] -> [('N', 'n_params'), ('D', 'tokens')], ordered as the law's variables.
    A single-variable law also accepts a bare column (any NAME). COLUMN may be a product of columns and
    numbers, e.g. C=6*n_params*tokens or M=tokens/n_params (see column_values)."""
    pairs = []
    for spec in specs:
        name, sep, col = spec.partition("=")
        name, col = name.strip(), col.strip()
        if not sep:
            name, col = "x", name
        if not name or not col:
            raise UsageError(f"--x expects NAME=COLUMN, got {spec!r}")
        pairs.append((name, col))
    if law.n_vars > 1:
        if sorted(n for n, _ in pairs) != sorted(law.variables):
            wanted = " and ".join(f"--x {v}=COLUMN" for v in law.variables)
            raise UsageError(f"--form {law.name} needs exactly {wanted}, got {specs}")
        return sorted(pairs, key=lambda p: law.variables.index(p[0]))
    if len(pairs) != 1:
        raise UsageError(f"--form {law.name} needs exactly one --x, got {len(pairs)}")
    return pairs


_FACTOR = re.compile(r"\s*([*/])?\s*([^*/]+)")


def column_values(df: pd.DataFrame, expr: str) -> pd.Series:
    """A column by name, or a product of columns and numbers ('6*n_params*tokens', 'tokens/n_params'): how a
    law over C = 6ND or M = D/N reads a table of N and D. Parsed, never evaluated."""
    import pandas as pd

    from analysis.data import numeric_column

    if expr in df.columns:
        return numeric_column(df[expr], expr)
    if not re.fullmatch(r"[^*/]+([*/][^*/]+)*", expr):
        raise UsageError(f"cannot read {expr!r} as a column or a product of columns and numbers")
    out: pd.Series | float = 1.0
    for op, factor in _FACTOR.findall(expr):
        factor = factor.strip()
        if factor in df.columns:
            value: pd.Series | float = numeric_column(df[factor], factor)
        else:
            try:
                value = float(factor)
            except ValueError:
                raise UsageError(
                    f"column {factor!r} not in the table (columns: {', '.join(map(str, df.columns))})"
                ) from None
        out = out / value if op == "/" else out * value
    if not isinstance(out, pd.Series):
        raise UsageError(f"{expr!r} names no column")
    return out.rename(expr)


def _pairs_of(raw: list[str], what: str, sep: str) -> dict[str, str]:
    out = {}
    for item in raw:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or (sep and sep not in value):
            raise UsageError(f"{what} expects NAME=VALUE{' (LO:HI)' if sep else ''}, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def _number(text: str, what: str) -> float:
    try:
        return float(text) if text.strip().lower() not in ("", "inf") else float("inf")
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number") from None


_OPS = {">=": "ge", "<=": "le", "!=": "ne", ">": "gt", "<": "lt", "=": "eq"}


def holdout_mask(df: pd.DataFrame, cond: str) -> np.ndarray:
    """'COLUMN>=VALUE' (or <=, >, <, =, !=; COLUMN may be a product, e.g. 6*n_params*tokens>=1e21): the rows
    to hold out."""
    for op, method in _OPS.items():
        col, found, value = cond.partition(op)
        if found:
            values = column_values(df, col.strip())
            return getattr(values, method)(_number(value, "--holdout-where")).to_numpy()
    raise UsageError(f"--holdout-where expects COLUMN>=VALUE (or <=, >, <, =, !=), got {cond!r}")


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
    for col in ("parameter", "value", f"{result.level:.0%} CI lo", "hi", "identified"):
        table.add_column(col, justify="left" if col in ("parameter", "identified") else "right")
    for name, est in [*result.params.items(), *result.derived.items()]:
        flag = result.flag_text(name)
        ident = f"no: {flag}" if flag else ("yes" if name in result.params else "")
        table.add_row(name, f"{est.value:.5g}", f"{est.lo:.5g}", f"{est.hi:.5g}", ident)
    for name, value in result.fixed.items():
        table.add_row(name, f"{value:.5g}", "fixed", "", "")
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(f"law: {result.law.describe()}", highlight=False)
    console.print(
        f"R² (log) = {result.r2_log:.4f}   points = {result.n_points}   "
        f"Huber objective = {result.objective:.4g}   "
        f"bootstrap = {result.n_boot_valid}/{result.n_boot} usable resamples",
        highlight=False,
    )
    if not result.identified:
        text = result.not_identified().removeprefix("not identified: ")
        console.print(f"NOT IDENTIFIED: {text}", highlight=False, soft_wrap=True)


def _print_backtest(bt: Backtest, label: str) -> None:
    table = Table(title=f"backtest of {bt.train_fit.form} law: {label}", title_justify="left")
    level = bt.train_fit.level
    for col in (*bt.x_names, "rows", "observed", "predicted", f"{level:.0%} interval", "error", "inside"):
        table.add_column(col, justify="right")
    for p in bt.points:
        interval = f"[{p.predicted.lo:.4g}, {p.predicted.hi:.4g}]"
        inside = {True: "yes", False: "NO", None: "–"}[p.inside]
        table.add_row(
            *(f"{v:.4g}" for v in p.x),
            str(p.n_rows),
            f"{p.observed:.4g}",
            f"{p.predicted.value:.4g}",
            interval,
            pct(p.error.value, 2),
            inside,
        )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(
        f"held out {bt.holdout}: {bt.n_holdout} row(s); fitted on {bt.n_train}. "
        f"{'FLAGGED: a held-out point lies outside its interval.' if bt.flagged else 'Not flagged.'}",
        highlight=False,
        soft_wrap=True,
    )
    if not bt.train_fit.identified:
        text = bt.train_fit.not_identified().removeprefix("not identified: ")
        console.print(f"refit NOT IDENTIFIED: {text}", highlight=False, soft_wrap=True)


def fit_command(
    data: Annotated[Path, typer.Argument(help="Table to fit: .csv or .parquet, one row per point.")],
    x: Annotated[
        list[str],
        typer.Option(
            "--x",
            help="NAME=COLUMN of a law variable (repeatable): chinchilla/shared N=... D=...; overtrain C=... "
            "M=... (COLUMN may be a product: C=6*n_params*tokens, M=tokens/n_params).",
        ),
    ],
    y: Annotated[str, typer.Option("--y", help="Column to fit (e.g. val_loss).")] = DEFAULT_OPTIONS.y,
    form: Annotated[
        str, typer.Option("--form", help=f"Named law: {' | '.join(FORMS)}.")
    ] = DEFAULT_OPTIONS.form,
    law: Annotated[
        str | None,
        typer.Option("--law", help="A law as an expression instead of --form, e.g. 'E + A*N^-a + B*D^-a'."),
    ] = None,
    fix: Annotated[
        list[str] | None, typer.Option("--fix", help="Hold a parameter at a value: NAME=VALUE (repeatable).")
    ] = None,
    bound: Annotated[
        list[str] | None,
        typer.Option("--bound", help="Box E or an exponent: NAME=LO:HI (repeatable), e.g. alpha=0:2."),
    ] = None,
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
    run_backtest: Annotated[
        bool,
        typer.Option("--backtest", help="Refit without held-out rows and check the law's predictions there."),
    ] = False,
    holdout: Annotated[
        str | None,
        typer.Option(
            "--holdout",
            help="Backtest: hold out the rows at the largest value of a law variable or column (a product "
            "too, e.g. 6*n_params*tokens). Default: the law's first variable.",
        ),
    ] = None,
    holdout_where: Annotated[
        str | None,
        typer.Option(
            "--holdout-where", help="Backtest: hold out the rows where COLUMN>=VALUE (<=, >, <, =, !=)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Fit a scaling law (Huber loss in log space, multi-start L-BFGS) with bootstrap confidence intervals
    and identifiability flags; with --backtest, check its extrapolation on held-out rows."""
    import pandas as pd

    from analysis.backtest import backtest
    from analysis.fit import FitResult, fit_law
    from analysis.laws import resolve_law

    try:
        if law is None and form not in FORMS:
            raise UsageError(f"unknown --form {form!r} (use {', '.join(FORMS)}, or --law EXPRESSION)")
        the_law = resolve_law(law if law is not None else form)
        fixed = {k: _number(v, f"--fix {k}") for k, v in _pairs_of(fix or [], "--fix", "").items()}
        bounds = {}
        for k, v in _pairs_of(bound or [], "--bound", ":").items():
            lo, _, hi = v.partition(":")
            bounds[k] = (_number(lo, f"--bound {k}"), _number(hi, f"--bound {k}"))
        the_law = the_law.with_fixed(fixed) if fixed else the_law
        the_law = the_law.with_bounds(bounds) if bounds else the_law
        pairs = parse_x(x, the_law)
        df = _apply_where(read_table(data), where or [], data)
        if y not in df.columns:
            raise UsageError(f"column {y!r} not in {data.name} (columns: {', '.join(map(str, df.columns))})")
        for _, c in pairs:
            if c not in df.columns and not re.search(r"[*/]", c):
                raise UsageError(
                    f"column {c!r} not in {data.name} (columns: {', '.join(map(str, df.columns))})"
                )
        X = pd.concat([column_values(df, c) for _, c in pairs], axis=1).to_numpy()
        values = column_values(df, y).to_numpy()
        names = [c for _, c in pairs]
        common = {"bootstrap": bootstrap, "seed": seed, "level": level}
        if not run_backtest and (holdout or holdout_where):
            raise UsageError("--holdout and --holdout-where choose a backtest's rows: add --backtest")
        if run_backtest:
            if holdout and holdout_where:
                raise UsageError("give --holdout or --holdout-where, not both")
            if holdout_where:
                chosen: str | np.ndarray | None = holdout_mask(df, holdout_where)
            elif holdout and holdout not in the_law.variables and holdout not in names:
                chosen = column_values(df, holdout).to_numpy()
            else:
                chosen = holdout
            result: FitResult | Backtest = backtest(
                X if the_law.n_vars > 1 else X[:, 0],
                values,
                the_law,
                holdout=chosen,
                holdout_name=holdout or holdout_where or "key",
                x_names=tuple(names),
                **common,
            )
        else:
            result = fit_law(X, values, the_law, x_names=names, y_name=y, **common)
    except (UsageError, AnalysisError) as err:
        raise _fail(str(err)) from None
    label = f"{y} vs " + ", ".join(f"{n}={c}" for n, c in pairs) + f" ({data.name})"
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif isinstance(result, FitResult):
        _print_table(result, label)
    else:
        _print_backtest(result, label)
