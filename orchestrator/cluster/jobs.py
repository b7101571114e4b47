"""Run a sweep's driver on a Ray cluster as a Ray Job (`ebtscale submit`, `ebtscale jobs ...`: cli/jobs.py).

Why a Job rather than `sweep run --address`: the driver then lives on the cluster's head node, so the sweep
keeps going when the submitting laptop sleeps or disconnects, and its status and logs stay queryable (here,
in the Ray dashboard, or with `ray job`). The job ships the project (`working_dir`) and an allowlisted set of
environment variables; it never ships credentials, which belong on the cluster (k8s secrets, node env).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from orchestrator import SOURCE_ROOT
from orchestrator.config import ConfigError
from orchestrator.trial_dir import DEFAULT_OUTPUT_DIR

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded: environments, VCS data, local results and caches (Ray also honours .gitignore).
DEFAULT_EXCLUDES = (
    ".venv",
    "venv",
    ".git",
    DEFAULT_OUTPUT_DIR,
    "**/__pycache__",
    "*.pyc",
    "*.egg-info",
    "build",
    "dist",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
)
# Copied from the submitting shell when set. An allowlist, so tokens and passwords never travel with the job.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "DS_ACCELERATOR",
    "EBTSCALE_CACHE_DIR",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
)
SECRET_NAME = re.compile(r"TOKEN|PASSW|SECRET|CREDENTIAL|ACCESS_KEY|API_KEY|PRIVATE_KEY|AUTH", re.I)
STAGED_SPEC_DIR = ".ebtscale-job"


def project_root() -> Path | None:
    """The source checkout this package runs from, or None when installed from a wheel (e.g. the image)."""
    root = SOURCE_ROOT
    return root if (root / "pyproject.toml").is_file() and (root / "orchestrator").is_dir() else None


def check_uri_has_no_credentials(name: str, uri: str) -> None:
    """A URI with user:password@ would be stored in the job's runtime env, readable in the dashboard."""
    if "://" in uri and (urlsplit(uri).username or urlsplit(uri).password):
        raise ConfigError(
            f"{name} contains credentials (user:password@host); give the cluster MLFLOW_TRACKING_USERNAME/"
            "MLFLOW_TRACKING_PASSWORD through its own environment (e.g. a Kubernetes secret) instead"
        )


def check_output_dir(value: str) -> None:
    """The driver runs in a temporary copy of the working dir on the head node: a relative output_dir would
    put checkpoints there (deleted with the session) and out of reach of the other nodes."""
    if "://" in value:
        raise ConfigError(
            f"output_dir {value!r}: object-store URIs are not supported yet; use a shared filesystem "
            "(e.g. NFS) mounted at the same absolute path on every node"
        )
    if not value.startswith("/"):
        raise ConfigError(
            f"output_dir {value!r} is not an absolute path: a Ray Job runs in a temporary folder on the head "
            "node; pass --output-dir with a path every node mounts at the same place (see docs/cluster.md)"
        )


def parse_env(items: list[str] | None) -> dict[str, str]:
    """['KEY=VALUE', ...] -> {KEY: VALUE}; names that look like secrets are refused."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env expects KEY=VALUE, got {item!r}")
        if SECRET_NAME.search(key):
            raise ConfigError(
                f"--env {key}: looks like a secret; set it on the cluster (e.g. a Kubernetes secret), "
                "not in the job, whose runtime env anyone with dashboard access can read"
            )
        out[key] = value
    return out


def is_uploaded(root: Path, relative: Path, excludes: list[str]) -> bool:
    """Whether Ray's upload of `root` will contain `relative`: not excluded, and not git-ignored (Ray honours
    .gitignore files)."""
    for part in relative.parts:
        if any(fnmatch.fnmatch(part, pattern.removeprefix("**/")) for pattern in excludes):
            return False
    try:
        git = ["git", "-C", str(root), "check-ignore", "-q", relative.as_posix()]
        ignored = subprocess.run(git, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return ignored.returncode != 0  # 0: ignored; 1: not ignored; 128: not a git repository


@dataclass
class JobPlan:
    """What `submit` sends: entrypoint, runtime env and metadata (also what the tests inspect)."""

    sweep: str
    n_trials: int
    entrypoint: str
    working_dir: Path
    spec_in_job: str  # the spec's path inside the job's working dir
    env_vars: dict[str, str]
    excludes: list[str]
    staged_spec: str | None = None  # spec text to place at spec_in_job (spec outside the upload, or edited)
    metadata: dict[str, str] = field(default_factory=dict)

    def runtime_env(self, working_dir: Path) -> dict[str, Any]:
        return {"working_dir": str(working_dir), "excludes": self.excludes, "env_vars": self.env_vars}


def plan_job(
    spec_path: Path,
    environ: dict[str, str],
    working_dir: Path | None = None,
    output_dir: str | None = None,
    extra_env: dict[str, str] | None = None,
    excludes: list[str] | None = None,
    max_failures: int = 2,
    max_concurrent: int | None = None,
    max_flops: float | None = None,
    max_trials: int | None = None,
) -> JobPlan:
    """Validate the spec here (fail fast, before anything is uploaded) and build the job's description.

    With `output_dir`, the job gets a copy of the spec pointing there, so the shipped specs (whose
    output_dir is the relative `outputs`) run on a cluster unchanged."""
    from orchestrator.sweep.expand import expand
    from orchestrator.sweep.plan import check_budget, plan
    from orchestrator.sweep.spec import load_spec, parse_spec

    spec = load_spec(spec_path)
    trials = expand(spec)
    check_budget(plan(trials, calibrate=False, throughput_flops=1.0), max_flops, max_trials)
    staged: str | None = None
    if output_dir is not None:
        check_output_dir(output_dir)
        spec = spec.model_copy(update={"output_dir": output_dir})
        staged = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        if parse_spec(yaml.safe_load(staged)) != spec:  # the copy must mean exactly what the original does
            raise ConfigError(f"cannot rewrite {spec_path} with a new output_dir; edit the spec instead")
    else:
        check_output_dir(
            str((yaml.safe_load(spec_path.read_text()) or {}).get("output_dir", DEFAULT_OUTPUT_DIR))
        )

    root = (working_dir or project_root() or spec_path.parent).resolve()
    if not root.is_dir():
        raise ConfigError(f"--working-dir {root} is not a directory")
    spec_abs = spec_path.resolve()
    all_excludes = [*DEFAULT_EXCLUDES, *(excludes or [])]
    inside = spec_abs.is_relative_to(root) and is_uploaded(root, spec_abs.relative_to(root), all_excludes)
    if inside and staged is None:
        spec_in_job = spec_abs.relative_to(root).as_posix()
    else:  # placed beside the project in the upload (see staged_working_dir)
        spec_in_job = f"{STAGED_SPEC_DIR}/{spec_abs.name}"
        staged = staged if staged is not None else spec_abs.read_text()

    env = {k: environ[k] for k in FORWARDED_ENV if environ.get(k)}
    env.update(extra_env or {})
    for key, value in env.items():
        check_uri_has_no_credentials(key, value)
    # The driver's ray.init passes some of these same variables again; without this Ray refuses to merge the
    # job's runtime env with the driver's (equal values, but the same keys).
    env["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")

    options = ["--max-failures", str(max_failures)]
    if max_concurrent is not None:
        options += ["--max-concurrent", str(max_concurrent)]
    commands = [["python", "-m", "orchestrator.cli", "sweep", "run", spec_in_job, *options]]
    if spec.tune is not None:  # the tuning stage first; the sweep trains what it chose
        commands.insert(0, ["python", "-m", "orchestrator.cli", "sweep", "tune", spec_in_job, *options])
    return JobPlan(
        sweep=spec.name,
        n_trials=len({t.id for t in trials}),
        entrypoint=" && ".join(shlex.join(c) for c in commands),
        working_dir=root,
        spec_in_job=spec_in_job,
        env_vars=env,
        excludes=all_excludes,
        staged_spec=staged,
        metadata={"ebtscale.sweep": spec.name, "ebtscale.spec": spec_in_job},
    )


@contextmanager
def staged_working_dir(job: JobPlan) -> Iterator[Path]:
    """The directory to upload: the working dir itself or, when the job needs a spec that is not in it, a
    temporary folder of symlinks to the working dir's entries plus that spec (Ray follows the links when it
    zips the folder, so nothing large is copied here)."""
    if job.staged_spec is None:
        yield job.working_dir
        return
    stage = Path(tempfile.mkdtemp(prefix="ebtscale-job-"))
    try:
        for entry in job.working_dir.iterdir():
            if entry.name != STAGED_SPEC_DIR:
                (stage / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        (stage / STAGED_SPEC_DIR).mkdir()
        (stage / job.spec_in_job).write_text(job.staged_spec)
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def submit(job: JobPlan, address: str, submission_id: str | None = None) -> str:
    """Upload the working dir and start the driver; returns the job id."""
    jobs = client(address)
    # Ray logs every ignored file and default exclude while packaging; our own summary says what matters.
    logging.getLogger("ray").setLevel(logging.ERROR)
    with staged_working_dir(job) as folder:
        return jobs.submit_job(
            entrypoint=job.entrypoint,
            runtime_env=job.runtime_env(folder),
            submission_id=submission_id or f"ebtscale-{job.sweep}-{uuid.uuid4().hex[:8]}",
            metadata=job.metadata,
        )


def follow_logs(address: str, job_id: str, out: Any = sys.stdout) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    jobs = client(address)

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    return str(jobs.get_job_status(job_id).value)


def client_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause: bad input, an unreachable dashboard (ConnectionError), an unknown job
    (RuntimeError), a missing or wrong token (AuthenticationError). Evaluated only when something is raised,
    so importing this module does not import Ray."""
    from ray.exceptions import AuthenticationError

    return (ConfigError, ConnectionError, RuntimeError, ValueError, OSError, AuthenticationError)
