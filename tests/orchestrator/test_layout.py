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


PACKAGES = ("model", "orchestrator", "analysis")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports when it runs: lazy (function-level) imports count, imports under
    `if TYPE_CHECKING:` do not (they never execute). `from a import b` names the module a.b when there is
    one, else a."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                found.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module)
    return found & known


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (or a module importing itself), by Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def project_import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}
    return {m: runtime_imports(p, set(paths)) - {m} for m, p in paths.items()}


def test_import_cycles_are_found() -> None:
    """The detector itself: a two-module and a three-module cycle are found, a chain is not."""
    assert import_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_among_the_project_modules() -> None:
    """A cycle makes import order matter and hides which module owns an idea (model.flops handed its public
    counts to model.family, which called back into flops). Lazy imports count: they only postpone it."""
    graph = project_import_graph()
    assert "model.flops" in graph["model.ebt"]  # the walk sees the project's imports
    assert import_cycles(graph) == []
