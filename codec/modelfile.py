"""What a model file says about itself, read without torch: its path (a shipped model's name or a file), and the
metadata in its safetensors header (name, weights hash, config; codec/checkpoint.py writes and loads the weights).

The ONNX Runtime path of the CLI uses this to find a model's cached graphs without importing torch
(codec.runtimes.runtime.cached_onnx_codec); loading the weights (codec.checkpoint.load_model) reads the same metadata.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from codec.errors import CodecError

# The safetensors header is an 8-byte little-endian length and that many bytes of JSON; the format caps it at
# 100 MB (a longer one is not a safetensors file, and is never read into memory).
MAX_HEADER_BYTES = 100_000_000


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A shipped model's file, or the given path if it exists; a clear error otherwise."""
    from codec import pretrained

    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = pretrained.find(str(name_or_path))
    if shipped is not None:
        if not shipped.path.is_file():
            raise CodecError(
                f"shipped model {shipped.name} is listed in codec/pretrained/registry.json but its file "
                f"{shipped.path} is missing from this installation; reinstall codec (pip install .) from a complete "
                "copy, or pass another model with --model PATH"
            )
        return shipped.path
    names = [m.name for m in pretrained.shipped_models()]
    listing = f"shipped models: {', '.join(names)}" if names else "no models ship with this version"
    if path.suffix or "/" in str(name_or_path):
        raise CodecError(f"model file {path} not found; pass the path of a .safetensors model file ({listing})")
    raise CodecError(f"unknown model '{name_or_path}'; {listing}; or pass the path of a model file")


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a .safetensors file's header ({} if it has none)."""
    bad = f"{path} is not a readable model file (.safetensors)"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CodecError(f"{bad}: it is shorter than a header")
            (size,) = struct.unpack("<Q", head)
            available = Path(path).stat().st_size - 8
            if size > min(MAX_HEADER_BYTES, available):
                raise CodecError(f"{bad}: its header length {size} is past the end of the file or the format's cap")
            header = json.loads(f.read(size))
    except OSError as e:
        raise CodecError(f"cannot read model file {path} ({e.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CodecError(f"{bad}: its header is not JSON") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CodecError(f"{bad}: its metadata is not a table of strings")
    return metadata


def shipped_model_for_id(model_id: str) -> str | None:
    """Name of the shipped model whose weights hash starts with `model_id`, if any."""
    from codec import pretrained

    for shipped in pretrained.shipped_models():
        if shipped.path.is_file() and read_metadata(shipped.path).get("weights_hash", "").startswith(model_id):
            return shipped.name
    return None


def default_model_name(no_default: str) -> str:
    """The shipped default model's name; `no_default` is the error message when the registry marks none."""
    from codec import pretrained

    default = pretrained.default_model()
    if default is None:
        raise CodecError(no_default)
    return default.name
