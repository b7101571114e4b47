"""Process-group set-up for DeepSpeed on CPU (gloo) or GPU (NCCL), single- or multi-process."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from orchestrator.ports import free_port


def configure_accelerator() -> str:
    """Pick DeepSpeed's accelerator before it is imported: 'cuda' where a GPU exists, else 'cpu'.
    A user's explicit DS_ACCELERATOR wins."""
    if "DS_ACCELERATOR" not in os.environ:
        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
    return os.environ["DS_ACCELERATOR"]


_OWN_WORLD_PORT = "EBTSCALE_SINGLE_PROCESS_PORT"  # marks a one-process world this module made, not a launcher


def ensure_single_process_env() -> None:
    """A lone process must look like rank 0 of 1, else DeepSpeed searches for MPI. Variables a launcher set
    (torchrun, Ray Train, `spawn`) are kept; ones inherited from a parent's own one-process world are not:
    that parent still holds their MASTER_PORT, and reusing it fails with "address already in use"."""
    inherited = os.environ.get(_OWN_WORLD_PORT) == os.environ.get("MASTER_PORT")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not inherited:
        return
    port = str(free_port())
    os.environ.update(
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=port,
        **{_OWN_WORLD_PORT: port},
    )


def init_process_group() -> str:
    """Join (or create) the default process group: gloo on CPU, NCCL on CUDA. Under Ray Train the group
    already exists and is reused. Returns DeepSpeed's accelerator (`configure_accelerator`)."""
    accelerator = configure_accelerator()
    if accelerator == "cpu":
        _disable_cpu_jit_ops()  # also when Ray Train made the group: deepspeed.initialize would build it
    if dist.is_available() and dist.is_initialized():
        return accelerator
    ensure_single_process_env()
    import deepspeed

    # DeepSpeed 0.19 calls collectives that torch 2.13 marks deprecated, once per step: noise, not news.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning
    )
    backend = "nccl" if accelerator == "cuda" else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    return accelerator


def _disable_cpu_jit_ops() -> None:
    """DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce op with g++ (about 60 s on a
    fresh machine, and parallel trials race to build it), and concurrent trials on one machine would share
    its shared-memory region. gloo does the same job, so it is switched off: nothing is compiled at run time
    on CPU (optimizer: torch_adam)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(value: float) -> float:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item()


def all_reduce_mean(value: float) -> float:
    world = dist.get_world_size() if dist.is_initialized() else 1
    return all_reduce_sum(value) / world


def all_reduce_any(flag: bool) -> bool:
    """True on every rank if it is true on any (all ranks must agree to stop)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _spawned_worker(local_rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    fn(*args)


def spawn(fn: Callable[..., Any], world: int, args: tuple = ()) -> None:
    """Run fn(*args) in `world` local processes forming one process group (without Ray)."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _spawned_worker, args=(world, free_port(), fn, args), nprocs=world, start_method="spawn", join=True
    )
