"""Process-group plumbing for `torchrun ... -m codec tokens`: one rank per process, coordination over gloo.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE (and the rendezvous address); without them we are a world of one.
Ranks only exchange barriers and small Python objects, so gloo serves GPU runs too (no NCCL set-up). The
timeout is long because ranks wait for the slowest one at the end of their shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from codec.errors import CodecError

TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order."""
        if self.size == 1:
            return [obj]
        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def join() -> World:
    """This process's place in the torchrun world (joining the gloo group if there is more than one rank)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if size == 1:
        return World()
    if dist.is_initialized():
        return World(dist.get_rank(), local_rank, dist.get_world_size())
    try:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:
        raise CodecError(
            f"cannot join the torchrun process group ({str(e).splitlines()[0]}); start with torchrun"
        ) from None
    return World(rank, local_rank, size, owns_group=True)


def pick_device(device: str, world: World) -> torch.device:
    """'auto': this rank's GPU if there is one, else the CPU; 'cuda' under torchrun means cuda:LOCAL_RANK."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CodecError(f"--device {device} but no CUDA device is visible; use --device cpu")
        if device == "cuda":
            if world.local_rank >= torch.cuda.device_count():
                raise CodecError(
                    f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} GPU(s); "
                    "lower torchrun's --nproc_per_node"
                )
            device = f"cuda:{world.local_rank}"
    return torch.device(device)
