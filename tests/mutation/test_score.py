"""The mutation score per file: what counts as killed, equivalent, not run; the target; the interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mutation import score


def _meta(root: Path, source: str, codes: dict[str, int | None]) -> None:
    path = root / f"{source}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": {}}))


def test_killed_timed_out_equivalent_and_not_run_are_told_apart(tmp_path):
    codes = {f"analysis.fit.x_f__mutmut_{i}": 1 for i in range(1, 9)}  # 8 killed by a failing test
    codes |= {"analysis.fit.x_f__mutmut_9": 36, "analysis.fit.x_f__mutmut_10": 0}  # timed out; survived
    codes |= {"analysis.fit.x_f__mutmut_11": 0, "analysis.fit.x_f__mutmut_12": None}  # equivalent; not run
    codes |= {"analysis.fit.x_f__mutmut_13": 33}  # no test reaches it: counts against the file
    _meta(tmp_path, "analysis/fit.py", codes)
    (fit,) = score.score_run(tmp_path, {"analysis.fit.x_f__mutmut_11"})
    assert fit.path == "analysis/fit.py"
    assert (fit.killed, fit.timed_out, fit.equivalent, fit.not_run) == (9, 1, 1, 1)
    assert fit.survived == ["analysis.fit.x_f__mutmut_10", "analysis.fit.x_f__mutmut_13"]
    assert fit.score == pytest.approx(9 / 11)
    lo, hi = fit.interval()
    assert 0.5 < lo < 9 / 11 < hi < 1.0


def test_a_file_below_the_target_fails_the_run_and_names_its_survivors(tmp_path, capsys, monkeypatch):
    _meta(tmp_path, "model/flops.py", {f"model.flops.x_g__mutmut_{i}": 1 for i in range(1, 10)})
    _meta(tmp_path, "analysis/data.py", {"analysis.data.x_h__mutmut_1": 1, "analysis.data.x_h__mutmut_2": 0})
    monkeypatch.setattr(score, "equivalent_mutants", lambda: set())
    assert score.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "| model/flops.py | 9 (0) | 0 | 0 | 0 | 100.0% |" in out
    assert "analysis/data.py: 50.0% < 90%" in out and "analysis.data.x_h__mutmut_2" in out
    _meta(tmp_path, "analysis/data.py", {"analysis.data.x_h__mutmut_1": 1, "analysis.data.x_h__mutmut_2": 1})
    assert score.main([str(tmp_path)]) == 0


def test_equivalents_are_read_from_the_docs_table(tmp_path):
    doc = tmp_path / "testing.md"
    doc.write_text(
        "| mutant | why equivalent |\n|---|---|\n"
        "| `analysis.laws.xǁLawǁsplit__mutmut_3` | a dtype the input already has |\n"
        "| `model.ebt.x_f__mutmut_12` | reason |\n"
        "Text that mentions `analysis.fit.x_f__mutmut_1` in passing.\n"
    )
    assert score.equivalent_mutants(doc) == {
        "analysis.laws.xǁLawǁsplit__mutmut_3",
        "model.ebt.x_f__mutmut_12",
    }


def test_no_run_yet_is_a_clear_error(tmp_path, capsys):
    assert score.main([str(tmp_path / "mutants")]) == 2
    assert "run `make mutation` first" in capsys.readouterr().err
