"""torch.distributed for torchrun: this process's place in the world, its device, and the few collectives we use.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE (and the rendezvous address); a plain `python -m codec ...` sets
none and runs as a world of one. Training (`codec train`) joins over NCCL on GPUs and gloo on CPUs; token
extraction (`codec tokens`) only exchanges barriers and small Python objects, so it joins over gloo with a
long timeout. Every collective here is a no-op in a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from codec.errors import CodecError


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this process initialised the process group, so `close` tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if initialized():
            dist.barrier()

    def gather(self, obj: object) -> list:
        """Every rank's `obj`, in rank order (a list of one when not distributed)."""
        if not initialized():
            return [obj]
        out: list = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and initialized():
            dist.destroy_process_group()


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def pick_device(device: str, local_rank: int = 0, *, option: str = "--device") -> torch.device:
    """'auto': this rank's GPU if there is one, else the CPU; 'cuda' under torchrun means cuda:LOCAL_RANK.

    `option` names the setting in error messages (`--device`, `train.device`)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CodecError(f"{option} {device} but no CUDA device is visible; use {option} cpu (or auto)")
        if device == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise CodecError(
                    f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) here; "
                    "lower torchrun's --nproc_per_node to the number of GPUs per machine"
                )
            device = f"cuda:{local_rank}"
    return torch.device(device)


def join(
    device: str = "auto", *, backend: str = "auto", timeout: timedelta | None = None, option: str = "--device"
) -> World:
    """This process's place in the torchrun world and its device, joining the process group if there is more
    than one rank. `backend` 'auto': NCCL on a GPU, gloo on the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank, option=option)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world_size > 1 and not initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, **({"timeout": timeout} if timeout else {}))
        except (RuntimeError, ValueError) as e:
            raise CodecError(
                f"cannot join the torchrun process group ({str(e).splitlines()[0]}); start with torchrun"
            ) from None
        owns = True
    return World(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, owns_group=owns)


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any rank (so all ranks take the same branch)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if initialized():
        dist.all_reduce(t)
    return t.tolist()


def all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place."""
    if initialized():
        dist.all_reduce(tensor)
    return tensor


def mean_over_ranks_(tensor: torch.Tensor) -> torch.Tensor:
    """Average `tensor` over ranks in place."""
    if initialized():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Copy rank `src`'s `tensor` to every rank in place."""
    if initialized():
        dist.broadcast(tensor, src)
    return tensor
