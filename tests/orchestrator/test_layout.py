"""The orchestrator's parts import one way (cli -> cluster, thinking -> sweep -> train -> the shared
modules -> model/), and model/ knows nothing of the orchestrator, Ray or MLflow: checked on the source's
imports."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

# anything else in orchestrator/: shared, rank 0. thinking/ resolves a spec's trials through sweep/
RANK = {"cli": 4, "cluster": 3, "thinking": 3, "sweep": 2, "train": 1}


def imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth: lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from orchestrator import tags`
    return found


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "shared"


def test_orchestrator_parts_import_one_way() -> None:
    wrong = []
    for path in sorted((REPO / "orchestrator").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        own = RANK.get(part(module), 0)
        for name in imports(path):
            if name.startswith("orchestrator.") and RANK.get(part(name), 0) > own:
                wrong.append(f"{module} imports {name}")
    assert not wrong, wrong
    assert "orchestrator.sweep.runner" in imports(REPO / "orchestrator" / "cli" / "sweep.py")  # the walk sees


def test_model_knows_nothing_of_the_orchestrator_ray_or_mlflow() -> None:
    for path in sorted((REPO / "model").rglob("*.py")):
        bad = {n for n in imports(path) if n.split(".")[0] in ("orchestrator", "ray", "mlflow", "deepspeed")}
        assert not bad, f"{path.name} imports {bad}"
    assert "model.flops" in imports(REPO / "model" / "family.py")


def test_flops_imports_no_family_code() -> None:
    """model/flops.py is what the families (model/family.py) and the models (model/ebt.py) build on; were it
    to import either, even lazily, model/ would have an import cycle."""
    family_code = {"model", "model.family", "model.ebt", "model.transformer_pp"}
    assert not imports(REPO / "model" / "flops.py") & family_code
    assert "model.flops" in imports(REPO / "model" / "ebt.py")


def test_train_runs_without_ray() -> None:
    for path in sorted((REPO / "orchestrator" / "train").rglob("*.py")):
        assert not {n for n in imports(path) if n.split(".")[0] == "ray"}, path.name
