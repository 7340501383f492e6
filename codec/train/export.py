"""`codec export`: a training checkpoint becomes an inference model file (codec.checkpoint.save_model).

The model file carries provenance: the full training config, the data dir, the step, the git commit
of the code that trained it, and the checkpoint it came from. Discriminators and optimizer state stay
in the training checkpoint (fine-tune by resuming from it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from codec.checkpoint import save_model
from codec.config import ModelConfig, from_dict
from codec.errors import CodecError
from codec.models.codec import build_model
from codec.train import checkpoints


def export_model(checkpoint: str | Path, output: str | Path, *, use_ema: bool = True, name: str | None = None) -> dict:
    """Write the generator of `checkpoint` (a step_*.pt or a training output dir) to `output`.

    Takes the generator EMA when the run kept one, unless `use_ema` is false. Returns a summary dict.
    """
    path = checkpoints.find(checkpoint)
    state = checkpoints.load(path)
    config = state["config"]
    model_config = from_dict(ModelConfig, config["model"])
    if name:
        model_config = dataclasses.replace(model_config, name=name)
    model = build_model(model_config)
    ema = state.get("generator_ema") if use_ema else None
    source = ema["model"] if ema else state["generator"]
    model.load_state_dict(source, strict=True)
    output = Path(output)
    if output.suffix != ".safetensors":
        raise CodecError(f"model files end in .safetensors; got {output.name}")
    provenance = {
        "recipe": state.get("config_source"),
        "data": config.get("data", {}).get("train_dir"),
        "steps": state["step"],
        "git_commit": state.get("git_commit"),
        "checkpoint": str(path.resolve()),
        "weights": "generator EMA" if ema else "generator",
        "training_config": config,
    }
    digest = save_model(model, output, provenance)
    return {"output": str(output), "checkpoint": str(path), "steps": state["step"], "ema": bool(ema), "hash": digest}
