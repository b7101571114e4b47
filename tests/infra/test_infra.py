"""infra/ recipes are valid for their tools and agree with pyproject.toml: every YAML parses, the KubeRay
manifests have the fields the operator requires, the cluster-launcher config passes Ray's own JSON schema,
the Dockerfiles are pinned, and every place that names a version names the one the project is tested with."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

INFRA = REPO / "infra"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(package: str) -> str:
    """The version pyproject.toml pins `package` to ('2.13.0', or '2.60' for '==2.60.*')."""
    for dep in PYPROJECT["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==([\w.]+?)(\.\*)?", dep)
        if m:
            return m.group(2)
    raise AssertionError(f"{package} is not pinned with == in pyproject.toml")


TORCH, RAY = pinned("torch"), pinned("ray")


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def by_kind(path: Path) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs(path)}


def test_every_yaml_parses() -> None:
    files = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert len(files) >= 4
    for path in files:
        assert docs(path), f"{path} is empty"


# ---------------------------------------------------------------------------------------------- images


def image_tags(text: str) -> list[str]:
    return re.findall(r"image:\s*([^\s#]+)", text)


def check_pinned_image(ref: str) -> None:
    name, _, tag = ref.rpartition(":")
    assert name and "/" not in tag and tag, f"{ref}: no explicit tag"
    assert tag != "latest" and "latest" not in ref, f"{ref}: `latest` is not a pin"


def check_project_image(ref: str) -> None:
    """Every Ray node runs the image built from infra/docker/Dockerfile: its tag names Ray and torch."""
    check_pinned_image(ref)
    assert ref.rsplit("/", 1)[-1].startswith("ebtscale:"), ref
    assert f"-ray{RAY}" in ref and f"-torch{TORCH}" in ref, f"{ref}: tag must name ray {RAY}, torch {TORCH}"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", [INFRA / "docker" / "Dockerfile", INFRA / "mlflow" / "Dockerfile"])
def test_dockerfiles_start_from_a_pinned_base(path: Path) -> None:
    instructions = dockerfile_instructions(path)
    first = next(word for word, _ in instructions if word != "ARG")  # ARGs may precede FROM
    assert first == "FROM", f"{path}: first instruction is {first}"
    for word, args in instructions:
        if word == "FROM":
            check_pinned_image(args.split()[0])
        if word == "RUN" and "pip install" in args:
            for req in re.findall(r"pip install ([^&;]+)", args):
                for token in req.split():
                    if not token.startswith("-") and token not in (".",) and not token.startswith("/"):
                        assert "==" in token, f"{path}: unpinned pip requirement {token!r}"
    assert "latest" not in path.read_text()


def test_project_image_matches_pyproject() -> None:
    text = (INFRA / "docker" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    assert args["TORCH_VERSION"] == TORCH
    assert args["RAY_VERSION"] == RAY or args["RAY_VERSION"].startswith(f"{RAY}.")
    deepspeed = pinned("deepspeed")
    assert args["DEEPSPEED_VERSION"].startswith(f"{deepspeed}.") or args["DEEPSPEED_VERSION"] == deepspeed
    python = re.search(r"python3\.(\d+)-venv", text)
    assert python and f"3.{python.group(1)}" < "3.13" and f"3.{python.group(1)}" >= "3.11"
    assert "pip install --no-deps ." in text  # the project itself, from its pyproject
    assert re.search(r"^USER 1000", text, flags=re.M), "the image must not run as root"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "outputs"} <= set(ignored)


# ---------------------------------------------------------------------------------------------- KubeRay


def check_pod_template(template: dict[str, Any], where: str) -> list[dict[str, Any]]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    for c in containers:
        assert c["name"] and c["image"], f"{where}: container without name or image"
        check_project_image(c["image"])
        for var in c.get("env", []):
            # Credentials come from Secrets (valueFrom), never as literal values in the manifest.
            if re.search(r"TOKEN|PASSWORD|SECRET|KEY", var["name"]):
                assert "valueFrom" in var and "value" not in var, (
                    f"{where}: {var['name']} must be a secretKeyRef"
                )
    return containers


def test_raycluster_manifest_is_a_valid_kuberay_raycluster() -> None:
    kinds = by_kind(INFRA / "k8s" / "raycluster.yaml")
    cluster = kinds["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["metadata"]["name"]
    spec = cluster["spec"]
    assert spec["rayVersion"].startswith(f"{RAY}.") or spec["rayVersion"] == RAY
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay: map[string]string
    check_pod_template(head["template"], "head")
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (worker,) = check_pod_template(group["template"], group["groupName"])
        assert worker["resources"]["limits"]["nvidia.com/gpu"]
    # Every pod mounts the shared claim at the same path (trials resume from checkpoints on any node).
    claim = kinds["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    templates = [head["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    for template in templates:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        shared = next(n for n, v in volumes.items() if "persistentVolumeClaim" in v)
        assert volumes[shared]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert mounts[shared] == "/mnt/shared"
    env = kinds["ConfigMap"]["data"]
    assert env["MLFLOW_TRACKING_URI"].startswith("http://") and "@" not in env["MLFLOW_TRACKING_URI"]


def test_rayjob_runs_a_valid_spec_on_that_cluster() -> None:
    from orchestrator.sweep.expand import expand
    from orchestrator.sweep.spec import parse_spec

    cluster = by_kind(INFRA / "k8s" / "raycluster.yaml")["RayCluster"]
    kinds = by_kind(INFRA / "k8s" / "rayjob.yaml")
    job = kinds["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    assert spec["entrypoint"].startswith("python -m orchestrator.cli sweep run /etc/ebtscale/")
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode")
    # The spec it runs is valid and writes to the shared volume the head mounts the ConfigMap beside.
    configmap = kinds["ConfigMap"]
    spec_file = spec["entrypoint"].split()[5].removeprefix("/etc/ebtscale/")
    sweep = parse_spec(yaml.safe_load(configmap["data"][spec_file]))
    assert sweep.output_dir.startswith("/mnt/shared/") and expand(sweep)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert any(v.get("configMap", {}).get("name") == configmap["metadata"]["name"] for v in head["volumes"])


# ---------------------------------------------------------------------------------------------- launcher


def test_cluster_launcher_config_passes_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((INFRA / "ray" / "cluster-aws.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]
    check_project_image(config["docker"]["image"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # reached through `ray dashboard` (ssh), not exposed
    mounts = " ".join(config["docker"]["run_options"])
    assert "/mnt/shared:/mnt/shared" in mounts


# ---------------------------------------------------------------------------------------------- MLflow


def test_mlflow_compose_is_pinned_loopback_and_secret_free() -> None:
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "mlflow"} <= set(services)
    for name, service in services.items():
        if "image" in service:
            check_pinned_image(service["image"])
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} is not bound to loopback"
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET", key) or ("://" in str(value) and "@" in str(value)):
                assert "${" in str(value), f"{name}: {key} must come from the environment, not the file"
    mlflow = services["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert not any("PASSWORD" in str(arg) for arg in mlflow["command"])  # `ps` would show it
    # The server speaks the clients' MLflow major version.
    server = re.search(r"mlflow:v(\d+)\.", (INFRA / "mlflow" / "Dockerfile").read_text())
    client_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("mlflow"))
    assert server and f"<{int(server.group(1)) + 1}" in client_pin.replace(" ", "")
    example = (INFRA / "mlflow" / "example.env").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", example, flags=re.M)  # a blank to fill, not a password


def test_chromium_install_script_is_executable() -> None:
    script = INFRA / "ci" / "install-chromium.sh"
    assert script.stat().st_mode & 0o111 and script.read_text().startswith("#!/usr/bin/env bash")
    assert "apt-get install" in script.read_text() and "chromium" in script.read_text()
