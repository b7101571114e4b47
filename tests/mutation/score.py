"""The mutation score per file of a `make mutation` run: `python tests/mutation/score.py [MUTANTS_DIR]`.

mutmut writes one `<file>.meta` per mutated file with each mutant's exit code. A mutant counts as killed when
a test failed (or timed out) against it; as equivalent when docs/testing.md lists it, with the reason, in its
table of equivalent mutants (a line "| `analysis.fit.x_name__mutmut_3` | reason |"); anything else a test
could have caught and did not (survived, or no test reaches its code) counts against the file. A mutant not
yet run (a partial run) counts in no column. Exits 1 when a file that ran is below the target.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TARGET = 0.90
REPO = Path(__file__).resolve().parents[2]
EQUIVALENTS_DOC = REPO / "docs" / "testing.md"
EQUIVALENT_ROW = re.compile(r"^\|\s*`(?P<name>[\w.]+__mutmut_\d+)`\s*\|")

# mutmut's exit codes: a test failed or pytest errored; the run timed out (a mutant that loops)
FAILED = {1, 3}
TIMED_OUT = {24, -24, 36, 152, 255}
NOT_RUN = {None, 2, 34}  # not run yet, interrupted, skipped


@dataclass(frozen=True)
class FileScore:
    path: str
    killed: int  # timed out included
    timed_out: int
    survived: list[str]  # survived or unreached, and not listed as equivalent
    equivalent: int
    not_run: int

    @property
    def judged(self) -> int:
        return self.killed + len(self.survived)

    @property
    def score(self) -> float:
        return self.killed / self.judged if self.judged else float("nan")

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson 95% interval of the score: `make mutation` runs a sample of each large file's mutants."""
        n = self.judged
        if not n:
            return float("nan"), float("nan")
        p = self.score
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half


def equivalent_mutants(doc: Path = EQUIVALENTS_DOC) -> set[str]:
    if not doc.is_file():
        return set()
    return {m["name"] for line in doc.read_text().splitlines() if (m := EQUIVALENT_ROW.match(line))}


def score_file(meta: Path, root: Path, equivalent: set[str]) -> FileScore:
    exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    killed = timed_out = equivalents = not_run = 0
    survived = []
    for name, code in sorted(exit_codes.items()):
        if code in NOT_RUN:
            not_run += 1
        elif name in equivalent:
            equivalents += 1
        elif code in FAILED or code in TIMED_OUT:
            killed += 1
            timed_out += code in TIMED_OUT
        else:
            survived.append(name)
    source = str(meta.relative_to(root)).removesuffix(".meta")
    return FileScore(source, killed, timed_out, survived, equivalents, not_run)


def score_run(root: Path, equivalent: set[str]) -> list[FileScore]:
    return [
        s
        for meta in sorted(root.rglob("*.py.meta"))
        if (s := score_file(meta, root, equivalent)).judged or s.not_run or s.equivalent
    ]


def table(scores: list[FileScore]) -> str:
    lines = [
        "| file | killed (timed out) | not killed | equivalent | not run | score | 95% interval |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in scores:
        lo, hi = s.interval()
        score, ci = (f"{s.score:.1%}", f"{lo:.0%}-{hi:.0%}") if s.judged else ("–", "")
        killed = f"{s.killed} ({s.timed_out})"
        lines.append(
            f"| {s.path} | {killed} | {len(s.survived)} | {s.equivalent} | {s.not_run} | {score} | {ci} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else REPO / "mutants"
    if not root.is_dir():
        print(f"no mutmut results at {root}: run `make mutation` first", file=sys.stderr)
        return 2
    scores = score_run(root, equivalent_mutants())
    print(table(scores))
    below = [s for s in scores if s.judged and s.score < TARGET]
    for s in below:
        print(f"\n{s.path}: {s.score:.1%} < {TARGET:.0%}; not killed:", *s.survived, sep="\n  ")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
