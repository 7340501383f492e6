"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint (`<output_dir>/checkpoints/step_00012000.pt`, torch.save, loaded with weights_only=True)
holds the generator, discriminators, their optimizers, schedulers, the grad scaler, the generator EMA,
the balancer, the step, the data position, every rank's RNG states, and the config. It is written
through a temporary file and renamed, so a crash never leaves a half-written checkpoint; only the
newest `keep` are kept. `codec export` turns one into an inference model file.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codec.atomic import atomic_output
from codec.errors import CodecError

KIND = "codec-training-checkpoint"
VERSION = 1
NAME = re.compile(r"step_(\d+)\.pt$")


def extra_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """Non-persistent buffers (left out of state_dict) by full name, e.g. the quantizer's EMA sums.

    state_dict rebuilds them on load only up to rounding; saving them makes resume bit-exact. A module's
    `deployment_buffers` (a calibrated model's output level gains) are not training state: left out, so a run
    started from a calibrated model file trains without them.
    """
    out = {}
    for prefix, m in module.named_modules():
        for name in m._non_persistent_buffers_set - getattr(m, "deployment_buffers", set()):
            if m._buffers.get(name) is not None:
                out[f"{prefix}.{name}" if prefix else name] = m._buffers[name].detach().clone()
    return out


def load_extra_buffers(module: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key, value in buffers.items():
            prefix, _, name = key.rpartition(".")
            module.get_submodule(prefix)._buffers[name].copy_(value)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"]))
    random.setstate(state["python"])


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def save(directory: Path, step: int, state: dict, keep: int) -> Path:
    """Write `state` atomically as the checkpoint of `step`; delete all but the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    with atomic_output(path) as tmp:
        torch.save({"kind": KIND, "version": VERSION, **state}, tmp)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def find(path: str | Path) -> Path:
    """A checkpoint file itself, or the newest checkpoint in a training output dir (or its checkpoints/)."""
    path = Path(path)
    if path.is_file():
        return path
    for directory in (path / "checkpoints", path):
        found = list_checkpoints(directory)
        if found:
            return found[-1]
    if path.is_dir():
        raise CodecError(f"no training checkpoints (step_*.pt) in {path}; train first, or pass a checkpoint file")
    raise CodecError(f"checkpoint {path} not found; pass a step_*.pt file or a training output dir")


def load(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint; a clear error if the file is something else."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many types for foreign or damaged files
        raise CodecError(
            f"{path} is not a readable training checkpoint ({type(e).__name__}); pick another step_*.pt"
        ) from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CodecError(f"{path} is not a codec training checkpoint (a model file is loaded with load_model instead)")
    if state.get("version", 0) > VERSION:
        raise CodecError(f"{path} is checkpoint version {state['version']}, newer than this codec; upgrade codec")
    return state
