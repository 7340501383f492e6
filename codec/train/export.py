"""`codec export`: a training checkpoint becomes an inference model file (codec.checkpoint.save_model).

The model file carries provenance: the full training config, the data dir, the steps (all of them: a run that
started from another model's weights, `train.init_from`, adds that model's steps, and `steps_this_run` says how
many were its own), the git commit of the code that trained it, and the checkpoint it came from. Paths are written
relative to the folder the export ran in (the recipe's), or as `.../` and their last two parts when they lie
outside it: a model file does not carry the layout of the machine that trained it. Discriminators and optimizer
state stay in the training checkpoint (fine-tune by resuming from it).
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
    init_steps = int(state.get("init_steps") or 0)
    provenance = {
        "recipe": state.get("config_source"),
        "data": config.get("data", {}).get("train_dir"),
        "steps": state["step"] + init_steps,
        **(
            {"steps_this_run": state["step"], "init_from": config.get("train", {}).get("init_from")}
            if init_steps
            else {}
        ),
        "git_commit": state.get("git_commit"),
        "checkpoint": str(path),
        "weights": "generator EMA" if ema else "generator",
        "training_config": config,
    }
    digest = save_model(model, output, portable_paths(provenance))
    return {"output": str(output), "checkpoint": str(path), "steps": state["step"] + init_steps, "ema": bool(ema),
            "hash": digest}  # fmt: skip


def portable_paths(value, base: Path | None = None):
    """`value` (a provenance table) with every absolute path made relative to `base` (default: the current folder)
    when it lies under it, else shortened to `.../` and its last two parts."""
    if isinstance(value, dict):
        return {k: portable_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, base) for v in value]
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    try:
        return str(path.relative_to((base or Path.cwd()).resolve()))
    except ValueError:
        return ".../" + "/".join(path.parts[-2:])
