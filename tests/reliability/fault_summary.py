"""Print the fault-injection table of a `make chaos` run: `python tests/reliability/fault_summary.py LOG`,
LOG being the JSON lines that tests append through sweep_helpers.record_fault."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarise(log: Path) -> str:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    lines = [
        "| guarantee | fault | injected | trials survived | lost |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['guarantee']} | {r['fault']} | {r['injected']} | {r['survived']} | {r['lost']} |")
    totals = {k: sum(r[k] for r in rows) for k in ("injected", "survived", "lost")}
    injected, survived, lost = (totals[k] for k in ("injected", "survived", "lost"))
    lines.append(f"| **total** | | **{injected}** | **{survived}** | **{lost}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    log = Path(sys.argv[1])
    if not log.is_file():
        sys.exit(f"no fault log at {log}: no reliability test recorded a fault")
    print(summarise(log))
