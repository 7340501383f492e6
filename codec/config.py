"""Configuration schema: frozen dataclasses as the schema, YAML as the values, strict loading.

An unknown key is an error that names the valid keys; lists become tuples so configs stay immutable;
`include:` pulls in other YAML files relative to the including file; dotted overrides
(`model.encoder.channels=48`) are applied after includes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codec.errors import CodecError


@dataclass(frozen=True)
class SEANetConfig:
    """One side (encoder or decoder) of the convolutional autoencoder."""

    channels: int = 32  # channels after the first convolution; doubled at every downsampling
    ratios: tuple[int, ...] = (2, 4, 5, 8)  # strides in encoder order (the decoder runs them reversed)
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    num_residual_layers: int = 1
    dilation_base: int = 2
    compress: int = 2  # residual blocks squeeze channels by this factor
    lstm_layers: int = 0  # streaming LSTM layers at the bottleneck (0 = none)
    max_channels: int = 1024  # cap on the doubled channel count


@dataclass(frozen=True)
class QuantizerConfig:
    """Group-residual vector quantization: `num_groups` groups, each an RVQ of `num_levels` levels."""

    num_groups: int = 2
    num_levels: int = 8
    codebook_size: int = 1024  # K, a power of two; log2(K) bits per code
    factorized: bool = False  # project each group to `codebook_dim` and look codes up by cosine (l2-normalised)
    codebook_dim: int = 8  # used only when factorized
    decay: float = 0.99  # EMA decay of codebook statistics
    epsilon: float = 1e-5  # Laplace smoothing of cluster sizes
    kmeans_iters: int = 10  # k-means iterations for initialisation from the first batch
    dead_code_threshold: float = 2.0  # codes whose EMA usage falls below this are restarted
    dropout: float = 1.0  # probability that a training item uses a random prefix of levels


@dataclass(frozen=True)
class ModelConfig:
    name: str = "grvq"
    sample_rate: int = 16000
    channels: int = 1  # audio channels the network takes; multichannel files are coded per channel
    latent_dim: int = 128
    encoder: SEANetConfig = field(default_factory=SEANetConfig)
    decoder: SEANetConfig = field(default_factory=SEANetConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        problems = []
        q = self.quantizer
        if self.sample_rate <= 0:
            problems.append("sample_rate must be positive")
        if q.codebook_size < 2 or q.codebook_size & (q.codebook_size - 1):
            problems.append(f"quantizer.codebook_size must be a power of two, got {q.codebook_size}")
        if q.num_groups < 1 or q.num_levels < 1:
            problems.append("quantizer.num_groups and quantizer.num_levels must be at least 1")
        elif self.latent_dim % q.num_groups:
            problems.append(f"latent_dim {self.latent_dim} is not divisible by num_groups {q.num_groups}")
        if _prod(self.encoder.ratios) != _prod(self.decoder.ratios):
            problems.append(
                f"encoder.ratios {self.encoder.ratios} and decoder.ratios {self.decoder.ratios} "
                "must have the same product (the hop length)"
            )
        if any(r < 1 for r in self.encoder.ratios + self.decoder.ratios):
            problems.append("ratios must be positive")
        if problems:
            raise CodecError("invalid model config: " + "; ".join(problems))

    @property
    def hop_length(self) -> int:
        return _prod(self.encoder.ratios)


@dataclass(frozen=True)
class Config:
    """A whole config file. Later sections (training, data) join `model` here."""

    model: ModelConfig = field(default_factory=ModelConfig)


def _prod(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise CodecError(f"config section '{where or '<root>'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise CodecError(f"unknown config key '{name}'; valid keys here: {', '.join(sorted(fields))}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise CodecError(f"config key '{where}' must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                return _coerce(arg, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise CodecError(f"config key '{where}' must be {hint.__name__}, got {value!r}")
    return value


def to_dict(config: Any) -> dict:
    """Plain nested dict (lists for tuples) suitable for JSON or YAML."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return plain(config)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise CodecError(f"config include cycle: {' -> '.join(str(p) for p in seen + (path,))}")
    if not path.is_file():
        raise CodecError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CodecError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CodecError(f"config file {path} must hold a mapping at the top level")
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    merged: dict = {}
    for inc in includes:
        merged = _merge(merged, _read_yaml(path.parent / inc, seen + (path,)))
    return _merge(merged, data)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested dict."""
    data = _merge({}, data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CodecError(f"override '{item}' must look like section.key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CodecError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (with includes and dotted overrides) into a validated `Config`."""
    data = apply_overrides(_read_yaml(Path(path)), overrides or [])
    return from_dict(Config, data)


def builtin_config_path(name: str) -> Path:
    """Path of a config that ships with the package (`codec/configs/NAME.yaml`)."""
    directory = Path(__file__).parent / "configs"
    path = directory / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in directory.glob("*.yaml"))
        raise CodecError(f"no built-in config '{name}'; available: {', '.join(names)}")
    return path
