"""torch.distributed glue: one code path for a single process and for DDP under torchrun (one node or many).

``torchrun --nproc_per_node N -m cli.stmoe_cmd train ...`` (or ``torchrun ... $(which stmoe) train ...``) sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; :func:`init_distributed` reads them and picks NCCL when every rank has a
GPU, gloo otherwise. Without those variables everything runs in one process and the helpers are no-ops.
Rank 0 alone writes logs and checkpoints; the others wait at a barrier.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import TrainConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: single process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """run.device -> a torch.device; "auto" is the local GPU when CUDA is available, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainConfigError(f"run.device is {name!r} but CUDA is not available; use run.device=cpu or auto")
        if name == "cuda":
            return torch.device(f"cuda:{local_rank}")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise TrainConfigError("run.device is 'mps' but MPS is not available; use run.device=cpu or auto")
    return torch.device(name)


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group that torchrun describes in the environment (idempotent), or stay single-process."""
    world = env_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(device=dev)
    if not dist.is_available():
        raise TrainConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    elif dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev,
                    backend=dist.get_backend())


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks (in place, returned); the tensor must live on the rank's device for NCCL."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Maximum over ranks (in place, returned)."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Rank ``src``'s Python object on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_ddp(model: torch.nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` under torchrun; the model itself otherwise."""
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids, output_device=info.device.index if ids else None,
               find_unused_parameters=find_unused_parameters)


def cleanup() -> None:
    """Leave the process group (end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
