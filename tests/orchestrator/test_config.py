"""Trial configs at the edge: every input is accepted and valid or rejected naming the field, and the CLI
turns a bad config into a one-line error with exit code 2 (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.cli import parse_overrides
from orchestrator.config import ConfigError, TrialConfig, parse_trial_config
from tests.helpers import cli

GOOD: dict[str, Any] = {
    "model": {"family": "ebt", "d_model": 64, "n_layers": 2, "n_heads": 2, "vocab_size": 512},
    "train": {"tokens": 100_000, "global_batch_size": 16, "micro_batch_size": 8},
}

SCALARS = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=6)
FIELDS = [
    ("model", "d_model"), ("model", "n_heads"), ("model", "n_layers"), ("model", "family"),
    ("model", "vocab_size"), ("model", "context_length"), ("train", "tokens"), ("train", "global_batch_size"),
    ("train", "micro_batch_size"), ("optim", "lr"), ("optim", "warmup_fraction"), ("deepspeed", "zero_stage"),
    ("resources", "num_workers"), ("data", "vocab_size"), ("model", "ebt"), ("bogus", "x"),
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), SCALARS)
def test_any_field_value_is_valid_or_rejected_by_name(field: tuple[str, str], value: Any) -> None:
    section, key = field
    data = {k: dict(v) for k, v in GOOD.items()}
    data.setdefault(section, {})[key] = value
    try:
        cfg = parse_trial_config(data)
    except ConfigError as err:
        assert section in str(err)  # the message names where the problem is
        return
    assert isinstance(cfg, TrialConfig)
    assert cfg.model.d_model % cfg.model.n_heads == 0
    assert cfg.train.global_batch_size % (cfg.train.micro_batch_size * cfg.resources.num_workers) == 0


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"model": {"n_heads": 3}}, "n_heads"),
        ({"train": {"micro_batch_size": 5}}, "global_batch_size"),
        ({"model": {"family": "rnn"}}, "model.family"),
        ({"deepspeed": {"zero_stage": 4}}, "deepspeed.zero_stage"),
        ({"train": {"tokens": -1}}, "train.tokens"),
        ({"model": {"ebt": {"mcmc_steps": 0}}}, "model.ebt.mcmc_steps"),
        ({"optim": {"learning_rate": 1}}, "optim.learning_rate"),  # a typo is an error, not ignored
    ],
)
def test_bad_configs_name_the_field(patch: dict, field: str) -> None:
    from orchestrator.config import deep_merge

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_trial_config(deep_merge(GOOD, patch))


@pytest.mark.parametrize(
    ("setting", "gpus", "accelerator", "planned", "trained"),
    [
        ("auto", 0, "cpu", "fp32", "fp32"),  # CPU trials (here, the smoke sweeps)
        ("auto", 1, "cuda", "bf16", "bf16"),  # a cluster's GPU workers; benchmarks/gpu.sh (0.5 GPU)
        ("auto", 0, "cuda", "fp32", "bf16"),  # `ebtscale train` on a GPU machine, default resources
        ("auto", 1, "cpu", "bf16", "fp32"),  # DS_ACCELERATOR=cpu set by hand
        ("fp32", 1, "cuda", "fp32", "fp32"),  # a set precision wins everywhere
        ("bf16", 0, "cpu", "bf16", "bf16"),
    ],
)
def test_the_plan_and_the_trainer_resolve_precision_in_one_place(
    setting: str, gpus: int, accelerator: str, planned: str, trained: str
) -> None:
    """TrialConfig.precision: the plan counts bytes in the precision the trial's resources imply, the
    trainer enables bf16 by the accelerator it runs on. A planner or trainer with a rule of its own (the
    GPUs asked for, DS_ACCELERATOR) gets some row wrong."""
    from model.family import activation_terms, count_params
    from orchestrator.config import deep_merge
    from orchestrator.sweep.plan import memory_terms, model_state_bytes
    from orchestrator.train.trainer import deepspeed_config

    resources = {"gpus_per_worker": gpus, "num_workers": 2}  # ZeRO-1 over 2: fp32 and bf16 states differ
    patch = {"deepspeed": {"precision": setting, "zero_stage": 1}, "resources": resources}
    cfg = parse_trial_config(deep_merge(GOOD, patch))
    assert (cfg.precision(), cfg.precision(accelerator)) == (planned, trained)
    terms = memory_terms(cfg)
    assert terms["states"] == model_state_bytes(count_params(cfg.model)["total"], 1, 2, planned)
    value_bytes = 4 if planned == "fp32" else 2
    assert terms["activations"] == activation_terms(cfg.model, 8, value_bytes)["peak"]
    assert deepspeed_config(cfg, accelerator)["bf16"]["enabled"] is (trained == "bf16")


@pytest.mark.parametrize(
    ("kernels", "vocab", "accelerator", "resolved"),
    [
        ({}, 512, "cpu", (False, False)),  # CPU trials compute what they did before the options
        ({}, 50_277, "cpu", (False, False)),
        ({}, 512, "cuda", (True, False)),  # a small vocabulary: the plain CE
        ({}, 50_277, "cuda", (True, True)),  # GPT-NeoX's vocabulary: no (B, S, V) float32 tensor
        ({"compile": False, "chunked_ce": True}, 512, "cuda", (False, True)),  # a set value wins
        ({"compile": True}, 512, "cpu", (True, False)),
    ],
)
@pytest.mark.parametrize("family", ["transformer_pp", "ebt"])
@pytest.mark.parametrize("stage", [1, 3])
def test_the_plan_and_the_trainer_resolve_kernels_in_one_place(
    kernels: dict, vocab: int, accelerator: str, resolved: tuple[bool, bool], family: str, stage: int
) -> None:
    """TrialConfig.kernels resolves model.kernels' 'auto' (None) for an accelerator as `precision` does; the
    trainer builds `resolved_model(accelerator)`, the planner costs `resolved_model()`. A trial whose
    kernels are all 'auto' keeps the id it had before the options existed."""
    from orchestrator.config import deep_merge
    from orchestrator.sweep.plan import activation_terms

    patch = {
        "model": {"family": family, "vocab_size": vocab, "kernels": kernels},
        "deepspeed": {"zero_stage": stage},
    }
    cfg = parse_trial_config(deep_merge(GOOD, patch))
    k = cfg.kernels(accelerator)
    if family == "transformer_pp" and stage == 3 and "compile" not in kernels:
        resolved = (False, resolved[1])  # DeepSpeed hooks its modules: compiled, they recompile each step
    assert (k.compile, k.chunked_ce) == resolved
    assert cfg.resolved_model(accelerator).kernels == k
    assert cfg.model.kernels.compile == kernels.get("compile")  # the config keeps 'auto'
    on_gpus = parse_trial_config(deep_merge(GOOD, {**patch, "resources": {"gpus_per_worker": 1}}))
    if family == "transformer_pp":  # the plan counts what the chunked CE keeps: no (B, S, V) tensor
        assert (activation_terms(on_gpus)["vocabulary"] == 0) is on_gpus.kernels().chunked_ce
    if family == "transformer_pp" and stage == 1:
        before = {512: "aaacd8075d80", 50_277: "e815c4876cd1"}  # config_hash at commit 2e991cf
        assert (cfg.config_hash() == before[vocab]) is (kernels == {})


def test_cli_overrides_parse_yaml_scalars() -> None:
    assert parse_overrides(["model.d_model=128", "optim.lr=3e-4", "model.family=ebt"]) == {
        "model": {"d_model": 128, "family": "ebt"},
        "optim": {"lr": 3e-4},
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["model.d_model"])


def test_cli_reports_a_bad_config_in_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "model": {**GOOD["model"], "n_heads": 3}}))
    for args in (["train", str(bad)], ["train", str(tmp_path / "missing.yaml")], ["sweep", "plan", str(bad)]):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "error" in proc.stderr.lower()


def test_unwritable_output_dir_fails_before_training(tmp_path: Path) -> None:
    from orchestrator.train.trainer import train_trial

    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")  # a file where a folder must go: fails for root too
    cfg = parse_trial_config({**GOOD, "output_dir": str(blocker / "out")})
    with pytest.raises(ConfigError, match="not writable"):
        train_trial(cfg, progress=False)
    assert blocker.read_text() == "in the way"  # nothing was lost


EXIT_PROBE = """
import atexit, sys, threading, time
from pathlib import Path
from orchestrator.cli import main

marker = Path(sys.argv[1])
atexit.register(lambda: print("atexit handler ran"))  # not flushed by itself
# a non-daemon thread still working when the command returns: the exit must wait for it
threading.Thread(target=lambda: (time.sleep(0.5), marker.write_text("thread finished"))).start()
sys.stdout.write("buffered line, no newline")  # left in the buffer: the exit must flush it
sys.argv = ["ebtscale", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["sweep", "plan", "missing.yaml"], 2)])
def test_cli_exit_keeps_pythons_exit_semantics(tmp_path: Path, args: list[str], code: int) -> None:
    """main() skips the interpreter's module teardown: threads, atexit handlers, flushing and the exit status
    must still be what a normal exit gives."""
    marker = tmp_path / "marker"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as piped
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, str(marker), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == code, proc.stderr
    assert "atexit handler ran" in proc.stdout
    assert "buffered line, no newline" in proc.stdout
    assert marker.read_text() == "thread finished"


def _probe_repeatedly(folder: str, times: int) -> None:
    from orchestrator.train.trainer import ensure_writable

    for _ in range(times):
        ensure_writable(Path(folder))


def test_ranks_probing_one_folder_at_once_do_not_fail_each_other(tmp_path: Path) -> None:
    """Every rank of a multi-process trial checks the trial folder at the same moment; one rank's probe must
    not remove another's (seen as a flaky 'not writable: No such file or directory')."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_probe_repeatedly, args=(str(tmp_path), 2000)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert list(tmp_path.iterdir()) == []  # no probe left behind
