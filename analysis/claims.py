"""The EBT paper's claims beside this study's: the claims table atop the report, and its first screen.

Per axis, the paper's reported EBT-vs-Transformer++ relative scaling-rate difference (Gladstone et al. 2025,
arXiv 2507.02092), each number with where it is printed, beside ours in each view (the axis' own x, per
training FLOP, per device-second: `compare.RateComparison.relative`, with its paired-bootstrap interval).
Only numbers checked against the paper's own text or figures are given; the others are `None` ("not
verified"), never a guess. docs/analysis.md says where each was checked.

Each cell gets one word, defined once here (`WORDS`):
- agrees: our interval holds the paper's number and excludes zero;
- contradicts: our interval excludes the paper's number;
- inconclusive: our interval holds both the paper's number and zero.
A cell without an interval, resting on a fit that is not identified, or without a verified paper number gets
no word (`None`, with the reason in its note): the report never calls such a cell evidence. Beside it, the
interval's half-width: the smallest difference this study could have told from zero.

System-2 is treated the same way: the paper's gain from thinking (perplexity reduction) beside ours, on the
validation text and out of distribution (`thinking.System2.shifts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from analysis.compare import AxisComparison
from analysis.data import EBT_LABEL, TPP_LABEL, VIEW_LABELS, VIEWS
from analysis.fit import ParamEstimate
from analysis.text import pct
from analysis.thinking import MODE_LABELS, SPLIT_LABELS, System2

PAPER = (
    "Gladstone et al. 2025, Energy-Based Transformers are Scalable Learners and Thinkers, arXiv 2507.02092"
)
ABSTRACT_RATE = (
    "abstract: EBTs achieve \u201can up to 35% higher scaling rate with respect to data, batch size, "
    "parameters, FLOPs, and depth\u201d (a maximum over the axes, not a per-axis number)"
)

AGREES, CONTRADICTS, INCONCLUSIVE = "agrees", "contradicts", "inconclusive"
WORDS: dict[str, str] = {
    AGREES: "our interval holds the paper's number and excludes zero",
    CONTRADICTS: "our interval excludes the paper's number",
    INCONCLUSIVE: "our interval holds both the paper's number and zero",
}
WORD_CODES: dict[str, float] = {AGREES: 1.0, INCONCLUSIVE: 0.0, CONTRADICTS: -1.0}  # as MLflow metrics


@dataclass(frozen=True)
class PaperNumber:
    """One number the paper reports, as a fraction (0.3598 = 35.98%), and where it is printed; `value` None:
    not verified against the paper, so not compared."""

    value: float | None
    source: str

    def text(self) -> str:
        return "not verified" if self.value is None else pct(self.value, 2)


# The relative scaling-rate difference (alpha_EBT - alpha_T++) / alpha_T++ per axis, language modelling.
# Figure 4's panel titles, checked on the authors' own image of that figure (the project page's
# static/images/scaling_nlp_1.png, whose sub-captions are Figure 4's); Figure 5's (params, FLOPs, width)
# could not be checked, and secondary sources disagree on them (docs/analysis.md).
PAPER_RATES: dict[str, PaperNumber] = {
    "data": PaperNumber(0.3598, 'Fig. 4a, panel title "EBT Scales 35.98% Faster Than Transformer++"'),
    "batch": PaperNumber(0.2846, 'Fig. 4b, panel title "EBT Scales 28.46% Faster Than Transformer++"'),
    "depth": PaperNumber(0.0529, 'Fig. 4c, panel title "EBT Scales 5.29% Faster Than Transformer++"'),
    "params": PaperNumber(None, "Fig. 5a (not verified)"),
    "width": PaperNumber(None, "Fig. 5c (not verified)"),
    "flops": PaperNumber(None, "Fig. 5b (not verified)"),
}

# The gain from thinking, as a perplexity reduction relative to not thinking. Out of distribution: the
# abstract's "improve performance with System 2 Thinking (i.e., extra computation) by 29% more than the
# Transformer++ on language tasks" (Fig. 6a: the mean over four OOD datasets of the perplexity increase, by
# thinking longer and self-verifying). On the pretraining data: Fig. 7's point at OOD shift 1.0 (the
# pretraining data itself), read exactly from the authors' SVG of that figure.
PAPER_SYSTEM2: dict[str, PaperNumber] = {
    "val": PaperNumber(
        0.1184, "Fig. 7, \u201cEBT With Max Thinking\u201d at OOD shift 1.0 (the pretraining data): 11.84%"
    ),
    "ood": PaperNumber(
        0.29,
        "abstract: System 2 Thinking improves performance \u201cby 29% more than the Transformer++\u201d;"
        " Fig. 6a",
    ),
}


def classify(ours: ParamEstimate, paper: float | None) -> str | None:
    """agrees / contradicts / inconclusive (`WORDS`) for our estimate's interval against the paper's number;
    None without a paper number or without an interval."""
    if paper is None or not (math.isfinite(ours.lo) and math.isfinite(ours.hi)):
        return None
    if not ours.contains(paper):
        return CONTRADICTS
    return INCONCLUSIVE if ours.contains(0.0) else AGREES


def half_width(est: ParamEstimate) -> float:
    """Half the interval's width: the smallest difference from zero this study could have detected."""
    return (est.hi - est.lo) / 2 if math.isfinite(est.lo) and math.isfinite(est.hi) else math.nan


@dataclass(frozen=True)
class ClaimCell:
    """Ours beside one paper number: the estimate and its interval, the word (None: see `note`)."""

    ours: ParamEstimate
    word: str | None
    note: str = ""

    @property
    def half_width(self) -> float:
        return half_width(self.ours)

    def text(self, digits: int = 0) -> str:
        """`-29% [-76%, +68%] ±72%: inconclusive` (`digits` after the point), or why there is no word."""
        if not math.isfinite(self.ours.value):
            return self.note or "–"
        est, ci = self.ours, ""
        if math.isfinite(est.lo):
            ci = f" [{pct(est.lo, digits)}, {pct(est.hi, digits)}] ±{100 * self.half_width:.{digits}f}%"
        return f"{pct(est.value, digits)}{ci}: {self.word or self.note}"

    def to_dict(self) -> dict[str, Any]:
        hw = self.half_width
        return {
            "ours": self.ours.to_dict(),
            "half_width": hw if math.isfinite(hw) else None,
            "word": self.word,
            "note": self.note,
        }


def _rate_cell(c: AxisComparison | None, paper: PaperNumber) -> ClaimCell:
    missing = ParamEstimate(math.nan, math.nan, math.nan)
    if c is None or c.rate is None:
        why = "; ".join(c.notes.values()) if c is not None else ""
        return ClaimCell(missing, None, f"not compared ({why or 'no fits'})")
    r = c.rate
    if not r.identified:
        return ClaimCell(r.relative, None, "no word: a fit is not identified")
    if not (math.isfinite(r.relative.lo) and math.isfinite(r.relative.hi)):
        return ClaimCell(r.relative, None, "no word: no interval")
    word = classify(r.relative, paper.value)
    if word is None:  # no paper number: say what our comparison alone says
        faster = "faster" if r.relative.value > 0 else "slower"
        side = f"{EBT_LABEL} {faster}" if r.significant else "no difference"
        return ClaimCell(r.relative, None, f"no paper number ({side} at {r.level:.0%})")
    return ClaimCell(r.relative, word)


@dataclass(frozen=True)
class AxisClaim:
    axis: str
    paper: PaperNumber
    cells: dict[str, ClaimCell]  # view ("x", "flops", "time") -> ours

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "paper": self.paper.value,
            "paper_source": self.paper.source,
            "views": {v: cell.to_dict() for v, cell in self.cells.items()},
        }


@dataclass(frozen=True)
class System2Claim:
    split: str  # "val" | "ood"
    paper: PaperNumber
    mode: str  # our EBT mode compared ("verify": self-verification, else "steps")
    forward_passes: float
    cell: ClaimCell

    def how(self) -> str:
        """`self-verification, 8 passes`: the EBT's mode and forward-pass budget this claim compares at."""
        return f"{MODE_LABELS[self.mode]}, {self.forward_passes:g} passes"

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "paper": self.paper.value,
            "paper_source": self.paper.source,
            "mode": self.mode,
            "forward_passes": self.forward_passes,
            **self.cell.to_dict(),
        }


@dataclass
class Claims:
    """The claims table: per axis and view, and System-2 per split; `level` of every interval, `y` fitted."""

    axes: list[AxisClaim]
    system2: list[System2Claim]
    level: float
    y: str
    notes: list[str] = field(default_factory=list)

    def first_screen(self) -> list[str]:
        """The report's first lines, one per axis and one for System-2 (at most 6 for the five axes)."""
        lines = [_axis_line(a) for a in self.axes]
        if self.system2:
            lines.append(_system2_line(self.system2))
        return lines

    def records(self) -> list[dict[str, Any]]:
        """One flat record per (claim, view): the table as MLflow's table artifact holds it."""
        out = []
        for a in self.axes:
            for view, cell in a.cells.items():
                out.append(_record(a.axis, VIEW_LABELS[view], a.paper, cell))
        for s in self.system2:
            out.append(_record(f"System-2 {SPLIT_LABELS.get(s.split, s.split)}", s.how(), s.paper, s.cell))
        return out

    def metrics(self) -> dict[str, float]:
        """Numbers for MLflow's run comparison: `claims.<axis>.<view>.{relative,lo,hi,half_width,word}`,
        `claims.system2.<split>.…` and `….paper` (word: agrees 1, inconclusive 0, contradicts -1; a missing
        number is left out)."""
        out: dict[str, float] = {}
        for a in self.axes:
            for view, cell in a.cells.items():
                out.update(_cell_metrics(f"claims.{a.axis}.{view}", cell))
            if a.paper.value is not None:
                out[f"claims.{a.axis}.paper"] = a.paper.value
        for s in self.system2:
            out.update(_cell_metrics(f"claims.system2.{s.split}", s.cell))
            if s.paper.value is not None:
                out[f"claims.system2.{s.split}.paper"] = s.paper.value
        return out

    def to_dict(self) -> dict[str, Any]:
        """summary.json's `claims` (keys documented in docs/analysis.md)."""
        return {
            "paper": PAPER,
            "abstract": ABSTRACT_RATE,
            "words": WORDS,
            "level": self.level,
            "y": self.y,
            "axes": [a.to_dict() for a in self.axes],
            "system2": [s.to_dict() for s in self.system2],
            "notes": self.notes,
            "records": self.records(),
            "metrics": self.metrics(),
        }


def _record(claim: str, view: str, paper: PaperNumber, cell: ClaimCell) -> dict[str, Any]:
    est, hw = cell.ours, cell.half_width
    numbers = {"ours": est.value, "lo": est.lo, "hi": est.hi}
    finite = {k: (v if math.isfinite(v) else None) for k, v in numbers.items()}
    return {
        "claim": claim,
        "view": view,
        "paper": paper.value,
        "paper_source": paper.source,
        **finite,
        "half_width": hw if math.isfinite(hw) else None,
        "word": cell.word or "",
        "note": cell.note,
    }


def _cell_metrics(prefix: str, cell: ClaimCell) -> dict[str, float]:
    est = cell.ours
    values = {
        "relative": est.value,
        "lo": est.lo,
        "hi": est.hi,
        "half_width": cell.half_width,
        "word": WORD_CODES[cell.word] if cell.word else math.nan,
    }
    return {f"{prefix}.{k}": float(v) for k, v in values.items() if math.isfinite(v)}


def _axis_line(a: AxisClaim) -> str:
    """`data: EBT's rate -29% [-76%, +68%] vs Transformer++'s, paper +36.0%: inconclusive | per FLOP:
    contradicts | per second: inconclusive` (a view without a word says what its interval alone says)."""
    own = a.cells.get("x")
    if own is None or not math.isfinite(own.ours.value):
        return f"{a.axis}: not compared (too few usable trials; see its section)"
    est, ci = own.ours, ""
    if math.isfinite(est.lo):
        ci = f" [{pct(est.lo, 0)}, {pct(est.hi, 0)}]"
    paper = f"paper {a.paper.text()}" if a.paper.value is not None else "paper not verified"
    head = f"{a.axis}: {EBT_LABEL}'s rate {pct(est.value, 0)}{ci} vs {TPP_LABEL}'s, {paper}: {_word(own)}"
    short = {"flops": "per FLOP", "time": "per second"}
    return " | ".join([head, *(f"{short[v]}: {_word(c)}" for v, c in a.cells.items() if v != "x")])


def _word(cell: ClaimCell) -> str:
    """The cell's word, else the side its interval alone shows ("EBT faster"), else why there is none."""
    if cell.word:
        return cell.word
    if cell.note.startswith("no paper number ("):
        return cell.note.removeprefix("no paper number (").split(" at ")[0]
    if cell.note.startswith("not compared"):
        return "not compared"
    return cell.note.removeprefix("no word: ") or "–"


def _system2_line(claims: Sequence[System2Claim]) -> str:
    """`System-2 gain (self-verification, 8 passes): val -1.5% [-3.1%, +0.2%] vs paper +11.84%: contradicts;
    OOD ...` (the gain: perplexity reduction relative to no thinking)."""
    parts = []
    for s in claims:
        est, ci = s.cell.ours, ""
        if math.isfinite(est.lo):
            ci = f" [{pct(est.lo, 1)}, {pct(est.hi, 1)}]"
        label = "OOD" if s.split == "ood" else s.split
        paper = s.paper.text()
        parts.append(f"{label} {pct(est.value, 1)}{ci} vs paper {paper}: {_word(s.cell)}")
    return f"System-2 gain ({claims[0].how()}): " + "; ".join(parts)


def build_claims(
    axes: Sequence[AxisComparison],
    views: Mapping[str, Sequence[AxisComparison]],
    system2: System2 | None,
    level: float,
    y: str,
) -> Claims:
    """The claims table from the report's comparisons: `axes` in the axis' own x, `views[v][i]` the same axis
    in view v ("flops", "time"), and the System-2 analysis (None: no thinking table)."""
    rows = []
    for i, c in enumerate(axes):
        paper = PAPER_RATES.get(c.axis, PaperNumber(None, "not reported"))
        cells = {"x": _rate_cell(c, paper)}
        for v in VIEWS:
            if v != "x" and v in views:
                cells[v] = _rate_cell(views[v][i], paper)
        rows.append(AxisClaim(c.axis, paper, cells))
    notes = []
    if y != "val_perplexity":
        notes.append(
            f"Ours are fitted to {y}; the paper's rates are of validation perplexity (its figures' y axes). "
            "`ebtscale report --y val_perplexity` fits the same quantity."
        )
    return Claims(rows, _system2_claims(system2), level, y, notes)


def _system2_claims(s2: System2 | None) -> list[System2Claim]:
    """Our EBT mode nearest the paper's "max thinking" (thinking longer and self-verifying): self-verification
    when measured, else thinking longer; at the largest budget both texts have (`System2.shifts`)."""
    if s2 is None or not s2.shifts:
        return []
    mode = "verify" if "verify" in s2.shifts else next(iter(s2.shifts))
    shift = s2.shifts[mode]
    out = []
    for split, est in (("val", shift.val), ("ood", shift.ood)):
        paper = PAPER_SYSTEM2[split]
        if math.isfinite(est.lo) and math.isfinite(est.hi):
            cell = ClaimCell(est, classify(est, paper.value))
        else:
            cell = ClaimCell(est, None, "no word: no interval")
        out.append(System2Claim(split, paper, mode, shift.forward_passes, cell))
    return out
