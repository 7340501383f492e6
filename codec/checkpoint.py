"""Model files: one .safetensors file holding the weights and everything needed to rebuild the model.

Metadata (all strings, as safetensors requires):
    format_version   integer; files of an older version are migrated on load, newer ones refused
    config           JSON of the ModelConfig
    name, sample_rate
    weights_hash     sha256 of the tensors (names and bytes, sorted by name; the level gains when set); checked on load
    provenance       JSON: recipe, data, steps, git commit, creation time, codec version, ...

Training checkpoints (optimizers, discriminators, ...) are a different kind of file, written by the trainer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from codec import __version__
from codec.atomic import atomic_output
from codec.config import ModelConfig, from_dict, to_dict
from codec.errors import CodecError
from codec.modelfile import read_metadata, resolve_model_path, shipped_model_for_id  # noqa: F401 (re-exported)
from codec.models.codec import LEVEL_GAIN_KEY, CodecModel, build_model, weights_hash

FORMAT_VERSION = 1

# format_version N -> function turning (metadata, tensors) of version N into version N + 1.
MIGRATIONS: dict[int, Callable[[dict, dict], tuple[dict, dict]]] = {}


def save_model(model: CodecModel, path: str | Path, provenance: dict | None = None) -> str:
    """Write `model` to `path` atomically; returns the weights hash."""
    if model.config is None:
        raise ValueError("model has no config; build it with codec.models.codec.build_model")
    state = model.saved_tensors()
    digest = weights_hash(state)
    provenance = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "codec_version": __version__, **(provenance or {})}
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(to_dict(model.config)),
        "name": model.name,
        "sample_rate": str(model.sample_rate),
        "weights_hash": digest,
        "provenance": json.dumps(provenance),
    }
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return digest


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> CodecModel:
    """Rebuild a model from its file alone (or from the name of a shipped model), strictly, in eval mode."""
    path = resolve_model_path(name_or_path)
    metadata = read_metadata(path)
    if "format_version" not in metadata:
        raise CodecError(
            f"{path} has no codec metadata; it is not a codec model file "
            "(a training checkpoint becomes one with `codec export`)"
        )
    try:
        version = int(metadata["format_version"])
    except ValueError:
        raise CodecError(f"{path} has a malformed format_version {metadata['format_version']!r}") from None
    if version > FORMAT_VERSION:
        raise CodecError(
            f"{path} is model format_version {version}, newer than this codec reads ({FORMAT_VERSION}); "
            "upgrade the codec package"
        )
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                tensors[key] = f.get_tensor(key)
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CodecError(f"{path} is not a readable model file (.safetensors): {str(e).splitlines()[0]}") from None
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise CodecError(f"{path} is model format_version {version}, which this codec cannot migrate")
        metadata, tensors = MIGRATIONS[version](metadata, tensors)
        version += 1
    try:
        config = from_dict(ModelConfig, json.loads(metadata["config"]))
    except (KeyError, json.JSONDecodeError) as e:
        raise CodecError(f"{path} has no valid model config in its metadata ({e})") from None
    except CodecError as e:
        raise CodecError(f"{path}: {e}") from None
    if metadata.get("weights_hash") and weights_hash(tensors) != metadata["weights_hash"]:
        raise CodecError(f"{path} is corrupt: its weights do not match the hash recorded in it; get a fresh copy")
    model = build_model(config)
    gain = tensors.pop(LEVEL_GAIN_KEY, None)
    missing, unexpected = _compare_keys(model.state_dict(), tensors)
    if missing or unexpected:
        raise CodecError(
            f"{path} does not match the architecture in its own config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); the file is damaged or was edited"
        )
    model.load_state_dict(tensors, strict=True)
    if gain is not None:
        try:
            model.set_level_gain(gain)
        except ValueError as e:
            raise CodecError(f"{path} has unusable output level gains ({e}); the file is damaged or edited") from None
    model.weights_hash = metadata.get("weights_hash") or model.weights_hash
    model.provenance = json.loads(metadata.get("provenance", "{}"))
    model.source = str(path)
    return model.to(device).eval()


def _compare_keys(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shape = sorted(k for k in set(expected) & set(got) if expected[k].shape != got[k].shape)
    return missing + shape, unexpected
