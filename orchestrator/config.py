"""Typed configuration of one training trial: model, data, optimiser, DeepSpeed, training budget, resources.

A trial config is what `ebtscale train CONFIG.yaml` reads and what a sweep expands into. Validation happens
here, at the edge: an error names the offending field (pydantic's `loc`), and everything below receives a
frozen object.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from model.config import CHUNKED_CE_MIN_VOCAB, FrozenModel, KernelsConfig, ModelConfig
from model.data import DataConfig
from model.family_ids import EBT
from orchestrator.tracking import flatten
from orchestrator.trial_dir import DEFAULT_OUTPUT_DIR, NAME_MAX_LENGTH, NAME_PATTERN, NAME_RULE, TrialDir


class SafeYaml12Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats: PyYAML (YAML 1.1) reads `1e5` and `3e-4` as strings, the most common
    way to write token counts, FLOP budgets and learning rates. Safe: plain data only, no Python objects."""


SafeYaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> object:
    return yaml.load(text, Loader=SafeYaml12Loader)


class ConfigError(ValueError):
    """A config or spec that cannot be used; the message names the field and the reason."""


class OptimConfig(FrozenModel):
    """AdamW with linear warmup and cosine decay to lr*min_lr_ratio (the EBT paper's shared settings; its
    exact recipe is `beta2: 0.999, warmup_steps: 10000, weight_decay_on: all`, see the paper-* specs)."""

    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="warmup steps as a fraction of all steps")
    warmup_steps: int | None = Field(
        None, ge=0, description="warmup optimizer steps; overrides warmup_fraction (the authors: 10000)"
    )
    weight_decay: float = Field(0.01, ge=0)
    weight_decay_on: Literal["matrices", "all"] = Field(
        "matrices",
        description="'matrices': weight decay on weight matrices and embeddings only (nanoGPT/LLaMA); "
        "'all': every parameter (the EBT authors' code). Never on parameters with an lr multiplier (alpha)",
    )
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0)


class DeepSpeedConfig(FrozenModel):
    zero_stage: Literal[0, 1, 2, 3] = 1
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: fp32 on CPU, bf16 on GPU")


class TrainConfig(FrozenModel):
    """The trial's budget and cadence. Steps are derived from the token budget, so D is exact."""

    tokens: int = Field(..., gt=0, description="training tokens D")
    global_batch_size: int = Field(16, ge=1, description="sequences per optimizer step, all workers")
    micro_batch_size: int = Field(8, ge=1, description="sequences per worker per forward pass")
    eval_every: int = Field(50, ge=1, description="optimizer steps between validation passes")
    eval_batches: int = Field(4, ge=1)
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between checkpoints")
    log_every: int = Field(1, ge=1)
    seed: int = 0
    divergence_loss: float = Field(1e3, gt=0, description="a loss above this is treated as divergence")


class ResourcesConfig(FrozenModel):
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)


Precision = Literal["fp32", "bf16"]

PLACEMENT_FIELDS = {"name", "output_dir", "trial_dir"}  # where and under which name: not what is trained


class TrialConfig(FrozenModel):
    """Everything one trial needs. `output_dir` is resolved to an absolute path (Ray changes cwd).
    `trial_dir` is the trial's own folder, set where the trial is planned (a sweep's spec expansion,
    `load_trial_config`); unset, it is `<output_dir>/trials/<name>`. Read it through `folder`."""

    name: str = Field("trial", pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)  # its folder's name
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    train: TrainConfig
    resources: ResourcesConfig = ResourcesConfig()
    output_dir: str = DEFAULT_OUTPUT_DIR
    trial_dir: str | None = None

    @model_validator(mode="after")
    def _check_batch(self) -> TrialConfig:
        per_step = self.train.micro_batch_size * self.resources.num_workers
        if self.train.global_batch_size % per_step != 0:
            raise ValueError(
                f"train.global_batch_size ({self.train.global_batch_size}) must be a multiple of "
                f"train.micro_batch_size x resources.num_workers ({per_step})"
            )
        if self.data.tokenizer == "byte" and self.model.vocab_size < 256:
            raise ValueError("model.vocab_size must be >= 256 for the byte tokenizer")
        return self

    @property
    def folder(self) -> TrialDir:
        """Where this trial lives on disk (the one answer: see orchestrator/trial_dir.py)."""
        if self.trial_dir is not None:
            return TrialDir(Path(self.trial_dir))
        return TrialDir.standalone(self.output_dir, self.name)

    def precision(self, accelerator: str | None = None) -> Precision:
        """The precision the trial trains in, the one resolution of `deepspeed.precision` (the planner counts
        bytes in it, the trainer enables DeepSpeed's bf16 by it): 'auto' is bf16 on DeepSpeed's 'cuda'
        accelerator and fp32 on any other.

        `accelerator` is where the trial trains. The trainer passes its own, DS_ACCELERATOR (set before
        DeepSpeed is imported by train/distributed.configure_accelerator: 'cuda' where torch sees a GPU,
        unless the user set it). Left out, it is what the planner knows before anything runs: 'cuda' when
        the trial asks for GPUs (`resources.gpus_per_worker > 0`), else 'cpu'. The two agree wherever a
        trial that trains on a GPU asks for one: CPU trials, a cluster's GPU workers, benchmarks/gpu.sh
        (gpus_per_worker 0.5, DS_ACCELERATOR=cuda). They differ for a trial that asks for no GPU yet sees
        one: `ebtscale train` on a GPU machine with the default resources, a DS_ACCELERATOR=cuda
        environment, or a Ray worker with no GPU on a GPU node (Ray 2.60 no longer hides a node's GPUs from
        it). That trial trains in bf16 on the GPU, as its accelerator says; its plan counts fp32 on CPU."""
        if self.deepspeed.precision != "auto":
            return self.deepspeed.precision
        return "bf16" if self._accelerator(accelerator) == "cuda" else "fp32"

    def _accelerator(self, accelerator: str | None) -> str:
        """Where the trial trains: the given accelerator, else what the planner knows (see `precision`)."""
        if accelerator is None:
            return "cuda" if self.resources.gpus_per_worker > 0 else "cpu"
        return accelerator

    def kernels(self, accelerator: str | None = None) -> KernelsConfig:
        """`model.kernels` with every 'auto' (None) resolved, the one resolution of those options, for the
        same `accelerator` as `precision`: on 'cuda' torch.compile on, and the chunked cross-entropy on from
        a vocabulary of CHUNKED_CE_MIN_VOCAB; on any other accelerator both off, so CPU trials compute what
        they computed before the options existed. An explicit true/false is kept.

        Except: no compile 'auto' for a Transformer++ under ZeRO-3. DeepSpeed hooks each of its modules to
        gather the parameters, and dynamo traces into those hooks and recompiles until its limit of 8 (seen
        on CPU: the same losses, then the hooks' frames run eager). The EBT runs on SecondOrderSafe's clones,
        in a module tree DeepSpeed never hooked, and compiles at every stage (test_trainer_kernels.py)."""
        k, cuda = self.model.kernels, self._accelerator(accelerator) == "cuda"
        hooked = self.deepspeed.zero_stage == 3 and self.model.family != EBT.name
        return k.model_copy(
            update={
                "compile": (cuda and not hooked) if k.compile is None else k.compile,
                "chunked_ce": (cuda and self.model.vocab_size >= CHUNKED_CE_MIN_VOCAB)
                if k.chunked_ce is None
                else k.chunked_ce,
            }
        )

    def resolved_model(self, accelerator: str | None = None) -> ModelConfig:
        """The model config the trial builds (and the planner costs) on `accelerator`: `kernels` resolved."""
        return self.model.model_copy(update={"kernels": self.kernels(accelerator)})

    @property
    def tokens_per_step(self) -> int:
        return self.train.global_batch_size * self.model.context_length

    @property
    def total_steps(self) -> int:
        """Optimizer steps for the token budget (at least one)."""
        return max(1, self.train.tokens // self.tokens_per_step)

    @property
    def grad_accum_steps(self) -> int:
        return self.train.global_batch_size // (self.train.micro_batch_size * self.resources.num_workers)

    def config_hash(self) -> str:
        """Stable id of the resolved config (where it lives and its name excluded: they do not change
        results)."""
        payload = self.model_dump(mode="json", exclude=PLACEMENT_FIELDS)
        if self.model.kernels == KernelsConfig():  # all 'auto': the ids of trials planned before it existed
            del payload["model"]["kernels"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def differences(self, other: TrialConfig) -> list[str]:
        """`field: this -> other` for every field the two configs' identities differ in (placement aside)."""
        mine, theirs = (flatten(c.model_dump(mode="json", exclude=PLACEMENT_FIELDS)) for c in (self, other))
        return [
            f"{k}: {mine.get(k)} -> {theirs.get(k)}"
            for k in sorted(mine.keys() | theirs.keys())
            if mine.get(k) != theirs.get(k)
        ]


class TrialMismatch(ConfigError):
    """A trial's folder holds a trial of the same name trained with another config."""


def check_same_trial(cfg: TrialConfig) -> None:
    """A trial's identity includes its config: a folder whose stored config.yaml differs from `cfg` holds
    another trial, whose result (or checkpoints) must not be taken for this one's. Raises TrialMismatch
    naming the differing fields and the two ways to train it anyway."""
    folder = cfg.folder
    if not folder.config.is_file():
        return
    stored = TrialConfig.model_validate(yaml_load(folder.config.read_text()))
    if stored.config_hash() == cfg.config_hash():
        return
    changed = stored.differences(cfg)
    raise TrialMismatch(
        f"trial {cfg.name} in {folder.path} was trained with another config ({'; '.join(changed[:8])}"
        + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        + "): give this one a new name (--set name=NEW), or pass --force to retrain it into a new run"
        " (the old folder and its run are kept)"
    )


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """One line per problem: `field.path: reason` (what users need, not pydantic's internals)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = f"must be a name of {NAME_RULE}" if e["type"] == "string_pattern_mismatch" else e["msg"]
        lines.append(f"  {loc}: {msg}")
    return f"invalid {source}:\n" + "\n".join(lines)


def parse_trial_config(data: dict[str, Any], source: str = "config") -> TrialConfig:
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Safe YAML load of a mapping, with a clear error for a missing file or a non-mapping document."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def load_trial_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrialConfig:
    """Load a trial YAML; relative output_dir is resolved against the current directory, and the trial's
    folder is fixed (`<output_dir>/trials/<name>` unless the YAML sets trial_dir)."""
    data = load_yaml(path)
    if overrides:
        data = deep_merge(data, overrides)
    cfg = parse_trial_config(data, source=str(path))
    output_dir = Path(cfg.output_dir).expanduser().resolve()
    folder = TrialDir.standalone(output_dir, cfg.name).path if cfg.trial_dir is None else cfg.folder.path
    return cfg.model_copy(update={"output_dir": str(output_dir), "trial_dir": str(folder.resolve())})


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
