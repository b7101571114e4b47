"""Guarantee: no input the project reads can run code, and nothing it starts listens beyond this machine by
default.

Static checks walk the AST of every Python file of the repository (comments and strings do not count): no
shell, no unsafe YAML or pickle loading, `torch.load` only with `weights_only=True`, no server bound to all
interfaces. Each check is first shown to catch a bad snippet. Behaviour checks feed real payloads to the real
loaders: a YAML tag that would call `os.system`, a `model.pt` whose unpickling would; each payload would
create a file, which must not exist afterwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import REPO, cli, tiny_trial

SKIP_DIRS = {".venv", ".git", "outputs", "build", "dist", "node_modules", "__pycache__"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_CALLS = {
    "os.system": "runs a shell",
    "os.popen": "runs a shell",
    "subprocess.getoutput": "runs a shell",
    "subprocess.getstatusoutput": "runs a shell",
    "yaml.unsafe_load": "unsafe YAML",
    "yaml.unsafe_load_all": "unsafe YAML",
    "yaml.full_load": "unsafe YAML",
    "yaml.full_load_all": "unsafe YAML",
    "pickle.load": "unpickles",
    "pickle.loads": "unpickles",
    "pickle.Unpickler": "unpickles",
    "cloudpickle.load": "unpickles",
    "cloudpickle.loads": "unpickles",
    "dill.load": "unpickles",
    "dill.loads": "unpickles",
    "joblib.load": "unpickles",
    "marshal.load": "unmarshals code",
    "marshal.loads": "unmarshals code",
    "shelve.open": "unpickles",
    "pandas.read_pickle": "unpickles",
    "eval": "evaluates code",
    "exec": "executes code",
}


def python_files() -> list[Path]:
    """The project's Python files: not environments, outputs or hidden folders (a local checkout of another
    project's code, kept in an ignored dot-folder for a benchmark, is not ours to check)."""
    return sorted(
        p
        for p in REPO.rglob("*.py")
        if not SKIP_DIRS & set(parts := p.relative_to(REPO).parts)
        and not any(part.startswith(".") for part in parts[:-1])
        and not p.name.endswith(".egg-info")
    )


class Checker(ast.NodeVisitor):
    """Collects `path:line: problem` for every unsafe construct in one module."""

    def __init__(self, name: str, safe_loaders: set[str]) -> None:
        self.name, self.safe_loaders = name, safe_loaders
        self.aliases: dict[str, str] = {"pd": "pandas", "np": "numpy"}
        self.problems: list[str] = []

    def flag(self, node: ast.AST, problem: str) -> None:
        self.problems.append(f"{self.name}:{getattr(node, 'lineno', 0)}: {problem}")

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.aliases[a.asname or a.name] = a.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for a in node.names:
            full = f"{node.module}.{a.name}"
            self.aliases[a.asname or a.name] = full
            if full in UNSAFE_CALLS:
                self.flag(node, f"imports {full} ({UNSAFE_CALLS[full]})")

    def dotted(self, node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            return f"{self.dotted(node.value)}.{node.attr}"
        return "?"

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        shell = kw.get("shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            self.flag(node, f"{name}(shell=...)")
        if name in UNSAFE_CALLS:
            self.flag(node, f"{name} ({UNSAFE_CALLS[name]})")
        if name in ("yaml.load", "yaml.load_all"):
            loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
            loader_name = self.dotted(loader).rsplit(".", 1)[-1] if loader is not None else None
            if loader_name not in self.safe_loaders:
                self.flag(node, f"{name} with Loader={loader_name} (not a safe loader)")
        if name == "torch.load":
            weights_only = kw.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                self.flag(node, "torch.load without weights_only=True")
        if name == "numpy.load":
            allow = kw.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                self.flag(node, "numpy.load(allow_pickle=...)")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if node.value in ("0.0.0.0", "::"):  # a listening address for every interface
            self.flag(node, f"binds to all interfaces ({node.value!r})")


def safe_loader_classes(trees: dict[str, ast.Module]) -> set[str]:
    """The safe YAML loaders plus the repository's own subclasses of them."""
    safe = set(SAFE_YAML_LOADERS)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                (b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")) in safe for b in node.bases
            ):
                safe.add(node.name)
    return safe


def problems_in(sources: dict[str, str]) -> list[str]:
    trees = {name: ast.parse(text, filename=name) for name, text in sources.items()}
    safe = safe_loader_classes(trees)
    out: list[str] = []
    for name, tree in trees.items():
        checker = Checker(name, safe)
        checker.visit(tree)
        out += checker.problems
    return out


BAD = {
    "shell": "import subprocess\nsubprocess.run('ls', shell=True)",
    "shell-variable": "import subprocess as sp\nflag = True\nsp.Popen(['ls'], shell=flag)",
    "os.system": "import os\nos.system('ls')",
    "os.popen": "from os import popen\npopen('ls')",
    "yaml-full": "import yaml\nyaml.load(open('x'), Loader=yaml.FullLoader)",
    "yaml-unsafe": "import yaml\nyaml.load(open('x'), yaml.UnsafeLoader)",
    "yaml-no-loader": "import yaml\nyaml.load(open('x'))",
    "yaml-unsafe_load": "import yaml\nyaml.unsafe_load('x')",
    "torch-default": "import torch\ntorch.load('model.pt')",
    "torch-false": "import torch\ntorch.load('model.pt', weights_only=False)",
    "pickle": "import pickle\npickle.load(open('x', 'rb'))",
    "pickle-alias": "import pickle as pk\npk.loads(b'')",
    "pandas": "import pandas as pd\npd.read_pickle('x')",
    "numpy": "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
    "eval": "eval(input())",
    "bind-all": "import ray\nray.init(dashboard_host='0.0.0.0')",
}


@pytest.mark.parametrize("case", list(BAD))
def test_the_static_checks_catch_unsafe_code(case: str) -> None:
    assert problems_in({case: BAD[case]}), f"{case} was not caught"


def test_the_static_checks_accept_safe_code() -> None:
    safe = (
        "import subprocess, yaml, torch, numpy as np\n"
        "class MyLoader(yaml.SafeLoader): pass\n"
        "subprocess.run(['ls'], shell=False)\n"
        "yaml.load('a: 1', Loader=MyLoader)\nyaml.safe_load('a: 1')\n"
        "torch.load('m.pt', map_location='cpu', weights_only=True)\n"
        "np.load('x.npy', mmap_mode='r')\nmodel.eval()\n"
    )
    assert problems_in({"safe": safe}) == []


def test_repository_python_has_no_unsafe_calls() -> None:
    files = python_files()
    assert len(files) > 30 and REPO / "orchestrator" / "thinking" / "evaluate.py" in files
    problems = problems_in({str(p.relative_to(REPO)): p.read_text() for p in files})
    this = str(Path(__file__).relative_to(REPO))
    # the only exception: this checker's own list of all-interface addresses (in visit_Constant)
    allowed = {"binds to all interfaces ('0.0.0.0')", "binds to all interfaces ('::')"}
    assert [p for p in problems if not (p.startswith(f"{this}:") and p.split(": ", 1)[1] in allowed)] == []


# ------------------------------------------------------------------------------------------ behaviour


def payload(marker: Path) -> str:
    return f'!!python/object/apply:os.system ["touch {marker}"]'


def test_trial_config_with_a_python_tag_is_rejected_without_running_it(tmp_path: Path) -> None:
    from orchestrator.config import ConfigError, load_trial_config

    marker = tmp_path / "pwned"
    config = tmp_path / "trial.yaml"
    config.write_text(f"name: {payload(marker)}\ntrain: {{tokens: 1000}}\n")
    with pytest.raises(ConfigError, match="not valid YAML: could not determine a constructor"):
        load_trial_config(config)
    # and as a command-line override of a good config
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_trial(tmp_path).model_dump(mode="json")))
    done = cli("train", str(good), "--no-track", "--set", f"name={payload(marker)}", timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: --set name: not valid YAML")
    assert not marker.exists()


def test_sweep_spec_with_a_python_tag_is_rejected_without_running_it(tmp_path: Path) -> None:
    from orchestrator.sweep.spec import SpecError, load_spec

    marker = tmp_path / "pwned"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: evil\nfamilies: [ebt]\noutput_dir: {payload(marker)}\n")
    with pytest.raises(SpecError, match="not valid YAML: could not determine a constructor"):
        load_spec(spec)
    done = cli("sweep", "plan", str(spec), timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {spec}: not valid YAML")
    assert not marker.exists()


class Payload:
    """Unpickling this calls os.system (what a malicious model.pt would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_model_weights_are_refused(tmp_path: Path) -> None:
    import torch

    from model import build_model
    from orchestrator.config import ConfigError
    from orchestrator.thinking.evaluate import load_trained

    cfg = tiny_trial(tmp_path)
    trial = tmp_path / "trial"
    trial.mkdir()
    (trial / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    state = build_model(cfg.model).state_dict()

    torch.save(state, trial / "model.pt")  # what the trainer writes: loads
    assert load_trained(trial)[0] == cfg

    marker = tmp_path / "pwned"
    torch.save({**state, "extra": Payload(marker)}, trial / "model.pt")
    with pytest.raises(ConfigError, match=r"model\.pt: refused: not a plain tensor state dict.*GLOBAL"):
        load_trained(trial)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ listening


def string_default(tree: ast.Module, env_var: str) -> list[object]:
    """The default of every `os.environ.get(env_var, default)` in the module."""
    return [
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "os.environ.get"
        and len(node.args) == 2
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == env_var
        and isinstance(node.args[1], ast.Constant)
    ]


def test_embedded_ray_binds_to_loopback_by_default() -> None:
    tree = ast.parse((REPO / "orchestrator" / "sweep" / "runner.py").read_text())
    assert string_default(tree, "EBTSCALE_DASHBOARD_HOST") == ["127.0.0.1"]
    (init,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "ray.init"]
    kw = {k.arg: ast.unparse(k.value) for k in init.keywords}
    assert kw["dashboard_host"] == "os.environ.get('EBTSCALE_DASHBOARD_HOST', '127.0.0.1')"
    assert kw["_node_ip_address"].startswith("'127.0.0.1' if address is None")


def test_infra_servers_listen_on_loopback_or_inside_a_cluster_only() -> None:
    infra = REPO / "infra"
    compose = yaml.safe_load((infra / "mlflow" / "docker-compose.yaml").read_text())
    published = [(name, p) for name, svc in compose["services"].items() for p in svc.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for _, p in published), published

    k8s = [d for f in sorted((infra / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert not [d for d in k8s if d["kind"] == "Ingress"]
    services = [d for d in k8s if d["kind"] == "Service"]
    assert all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for d in services)
    for d in k8s:
        if d["kind"] == "RayCluster":
            assert d["spec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
            assert d["spec"].get("authOptions", {}).get("mode") == "token"  # in-cluster access needs a token

    launcher = yaml.safe_load((infra / "ray" / "cluster-aws.yaml").read_text())
    head = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_a_trial_name_cannot_escape_its_output_folder(tmp_path: Path) -> None:
    """`ebtscale train` of a config named `../../../evil` is refused naming the field, before anything is
    written; the sweep's and a standalone trial's folders refuse such a name where they are placed, too."""
    from orchestrator.sweep_dir import SweepDir
    from orchestrator.trial_dir import TrialDir

    out = tmp_path / "a" / "b" / "out"
    config = tmp_path / "evil.yaml"
    config.write_text(yaml.safe_dump({"name": "../../../evil", "train": {"tokens": 512}}))
    done = cli("train", str(config), "-o", str(out), "--no-track", timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "name: must be a name of letters, digits" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.yaml"]

    for bad in ("../../../evil", "..", "a/b", ".hidden", "", "x" * 200):
        with pytest.raises(ValueError, match="cannot be a folder"):
            TrialDir.standalone(out, bad)
        with pytest.raises(ValueError, match="cannot be a folder"):
            SweepDir.of(out, bad)
    with pytest.raises(ValueError, match="cannot be a folder"):
        SweepDir.of(out, "ok").trial("../../x", "abc")
    assert TrialDir.standalone(out, "tiny-ebt.v2").path == out.resolve() / "trials" / "tiny-ebt.v2"


@given(name=st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_accepted_trial_name_stays_inside_its_root(name: str) -> None:
    """Whatever the name: the config refuses it naming the field, or its folder is one level inside
    `<output_dir>/trials`."""
    from orchestrator.config import ConfigError, parse_trial_config

    root = Path("/tmp/ebtscale-names/out")
    try:
        cfg = parse_trial_config({"name": name, "train": {"tokens": 512}, "output_dir": str(root)})
    except ConfigError as err:
        assert "name:" in str(err)
        return
    assert cfg.folder.path.parent == root / "trials" and cfg.folder.path.name == name
