"""Model configuration schema: frozen dataclasses as the schema, YAML as the values, strict loading.

This module holds the model's schema (`ModelConfig` and its parts), `load_model_config`, and the generic loading
helpers; the training sections of a config file (data, train, discriminator, loss) and `load_config`, which reads
a whole training config, live in codec/train/config.py.

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
    """One side (encoder or decoder) of the convolutional autoencoder: its hyperparameters, declared here once.

    `codec.modules.seanet.SEANetEncoder` and `SEANetDecoder` take this dataclass itself (with the audio channels
    and the latent dimension), so a new hyperparameter is a field here and the code that reads it, nothing else.
    """

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
    patch_size: int = 1  # samples folded into channels before the first conv (encoder) / after the last (decoder)
    # a lapped linear path beside the deep one, frame to latent (encoder) and latent to frame (decoder): a learned
    # transform code the deep path refines, so the autoencoder reconstructs the waveform from the first steps
    linear_skip: bool = False
    # decoder only: how the last features become samples. "waveform": a convolution (and unpatching) at the last
    # stage's rate; "istft": after `istft_stage` of the upsampling stages, a causal inverse-STFT head
    # (codec/modules/istft.py) predicts log-magnitude and phase per frame and overlap-adds them, with STFT hop =
    # hop_length / the upsampling left. It adds no latency. Default stage 1: in grvq16k (stages at 250, 1000 and
    # 2000 Hz) that is 250 Hz, hop 64, n_fft 256 (16 ms, 62.5 Hz bins: the harmonics of most voices fall in
    # separate bins), and it drops the two widest-rate stages, about half the decoder's arithmetic; stage 2
    # (1000 Hz, hop 16, n_fft 64: 250 Hz bins) would keep most of the cost and resolve no harmonics.
    head: str = "waveform"
    istft_stage: int = 1  # upsampling stages before the istft head (0 = at the latent frame rate)
    istft_n_fft: int | None = None  # DFT size of the istft head (none = 4 x its hop)

    def __post_init__(self) -> None:
        _check_choice("head", self.head, ("waveform", "istft"))
        if self.head == "istft" and not 0 <= self.istft_stage <= len(self.ratios):
            raise CodecError(f"istft_stage {self.istft_stage} must lie in 0..{len(self.ratios)} (the number of ratios)")

    @property
    def hop_length(self) -> int:
        """Samples per latent frame: the patch size times the strides."""
        return self.patch_size * _prod(self.ratios)

    @property
    def istft_hop(self) -> int:
        """Samples per frame at the istft head: the upsampling that the stages after it would have done."""
        return self.patch_size * _prod(self.ratios[: len(self.ratios) - self.istft_stage])

    @property
    def istft_window(self) -> int:
        """The istft head's DFT size: `istft_n_fft`, or 4 x its hop when none."""
        return self.istft_n_fft or 4 * self.istft_hop


@dataclass(frozen=True)
class SpectralConfig:
    """The frame-rate spectral family (codec/modules/spectral.py): causal STFT, ConvNeXt blocks over frames,
    inverse DFT with a short cross-fade. Used when `model.family` is `spectral`."""

    hop_length: int = 320  # samples per frame (the STFT hop)
    n_fft: int = 640  # analysis window: the frame's own hop and the one before it (no lookahead)
    overlap: int = 40  # synthesis cross-fade between neighbouring frames' segments, in samples
    delay: int = 0  # output delay in samples (0..overlap): each segment starts `delay` samples before its frame's hop,
    # so that much of the cross-fade covers samples both frames saw; adds `delay` to the algorithmic latency
    power: float = 0.3  # power-law compression of the complex spectrum, in and out
    encoder_channels: int = 256
    encoder_blocks: int = 6
    decoder_channels: int = 256
    decoder_blocks: int = 6
    kernel_size: int = 7  # frames each depthwise convolution sees
    mlp_ratio: float = 3.0

    def __post_init__(self) -> None:
        problems = []
        if self.hop_length < 1 or self.n_fft < self.hop_length or self.n_fft % 2:
            problems.append(f"n_fft {self.n_fft} must be even and at least hop_length {self.hop_length}")
        if not 0 <= self.overlap <= self.hop_length:
            problems.append(f"overlap {self.overlap} must lie in 0..hop_length ({self.hop_length})")
        if not 0 <= self.delay <= self.overlap:
            problems.append(f"delay {self.delay} must lie in 0..overlap ({self.overlap})")
        if not 0 < self.power <= 1:
            problems.append(f"power must lie in (0, 1], got {self.power}")
        if min(self.encoder_channels, self.decoder_channels, self.kernel_size) < 1 or self.mlp_ratio <= 0:
            problems.append("channels, kernel_size and mlp_ratio must be positive")
        if min(self.encoder_blocks, self.decoder_blocks) < 0:
            problems.append("encoder_blocks and decoder_blocks must be zero or more")
        if problems:
            raise CodecError("invalid model.spectral config: " + "; ".join(problems))


MODEL_FAMILIES = ("seanet", "spectral")
QUANTIZER_GRADIENTS = ("straight_through", "rotation")  # how the decoder's gradient reaches the encoder
CODEBOOK_UPDATES = ("ema", "simvq")  # how codebooks learn
LEVEL_TYPES = ("vq", "fsq")  # what one residual level is


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
    # how the decoder's gradient reaches the encoder through the quantizer: straight_through (copied as is) or
    # rotation (Fifty et al., 2024: rotated and rescaled by the map that takes each latent onto its codeword)
    gradient: str = "straight_through"
    # how codebooks learn: ema (moving averages of their residuals, dead codes restarted) or simvq (Zhu et al., 2024:
    # a frozen basis times a learned linear map, trained by a codebook loss; adds basis and transform to the model)
    codebook_update: str = "ema"
    # vq: each level a free codebook of K entries (learned as `codebook_update` says); fsq: each level a finite
    # scalar quantizer (Mentzer et al., 2023) inside the same group x level layout: the residual is projected onto
    # len(fsq_levels) orthonormal directions, each scaled and rounded to one of fsq_levels[i] steps, and projected
    # back. Its K = prod(fsq_levels) codewords are stored as an ordinary codebook, so nearest-codeword search
    # (every backend, ONNX included) gives exactly FSQ's rounding. Directions, step sizes and centre learn by
    # gradient (a codebook loss), starting from a PCA of real residuals at the warm start.
    level_type: str = "vq"
    fsq_levels: tuple[int, ...] = (4, 4, 4, 4, 4)

    def __post_init__(self) -> None:
        _check_choice("model.quantizer.gradient", self.gradient, QUANTIZER_GRADIENTS)
        _check_choice("model.quantizer.codebook_update", self.codebook_update, CODEBOOK_UPDATES)
        _check_choice("model.quantizer.level_type", self.level_type, LEVEL_TYPES)
        if self.level_type == "fsq":
            if not self.fsq_levels or min(self.fsq_levels) < 2 or _prod(self.fsq_levels) != self.codebook_size:
                raise CodecError(
                    f"model.quantizer.fsq_levels {list(self.fsq_levels)} must be steps of at least 2 whose product "
                    f"is codebook_size {self.codebook_size}, e.g. [4, 4, 4, 4, 4] for 1024"
                )
            if self.factorized or self.codebook_update != "ema":
                raise CodecError("model.quantizer.level_type fsq takes neither factorized nor codebook_update simvq")


# QuantizerConfig fields that only steer training: two models that differ in these alone are the same architecture
QUANTIZER_TRAINING_KEYS = ("decay", "epsilon", "kmeans_iters", "dead_code_threshold", "dropout", "gradient")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "grvq"
    # seanet: the convolutional waveform family (encoder/decoder sections); spectral: the frame-rate spectral
    # family (spectral section). The sections of the other family are ignored.
    family: str = "seanet"
    sample_rate: int = 16000
    channels: int = 1  # audio channels the network takes; multichannel files are coded per channel
    latent_dim: int = 128
    encoder: SEANetConfig = field(default_factory=SEANetConfig)
    decoder: SEANetConfig = field(default_factory=SEANetConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    spectral: SpectralConfig = field(default_factory=SpectralConfig)

    def __post_init__(self) -> None:
        _check_choice("model.family", self.family, MODEL_FAMILIES)
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
        enc, dec = self.encoder, self.decoder
        if enc.hop_length != dec.hop_length:
            problems.append(
                f"encoder patch_size x ratios ({enc.patch_size} x {enc.ratios}) and decoder patch_size x ratios "
                f"({dec.patch_size} x {dec.ratios}) must have the same product (the hop length)"
            )
        if any(r < 1 for r in enc.ratios + dec.ratios) or min(enc.patch_size, dec.patch_size) < 1:
            problems.append("ratios and patch_size must be positive")
        if enc.head != "waveform":
            problems.append(f"encoder.head is {enc.head!r}; the output head is a decoder setting")
        elif dec.head == "istft":
            n_fft = dec.istft_window
            if n_fft % 2 or n_fft % dec.istft_hop or n_fft < 3 * dec.istft_hop:
                problems.append(
                    f"decoder.istft_n_fft {n_fft} must be even, a multiple of the istft hop {dec.istft_hop} "
                    f"and at least 3 times it"
                )
        if problems:
            raise CodecError("invalid model config: " + "; ".join(problems))

    @property
    def hop_length(self) -> int:
        if self.family == "spectral":
            return self.spectral.hop_length
        return self.encoder.hop_length

    @property
    def algorithmic_latency(self) -> int:
        """Samples from an input sample's arrival to the output sample that reconstructs it, in the worst case:
        one frame (the encoder waits for a whole hop), plus the spectral family's synthesis `delay`."""
        return self.hop_length + (self.spectral.delay if self.family == "spectral" else 0)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CodecError(f"config key '{key}' is {value!r}; choose one of: {', '.join(choices)}")


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
    if hint is float and isinstance(value, str):
        try:  # PyYAML (YAML 1.1) reads 1e-4 as a string; take it as the number it clearly is
            return float(value)
        except ValueError:
            pass
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


def load_model_config(path: str | Path, overrides: list[str] | None = None) -> ModelConfig:
    """Read a YAML config (with includes and dotted overrides) and validate its `model:` section alone.

    The other sections are ignored, so a training config (see codec/train/config.py) is a valid input.
    """
    data = apply_overrides(_read_yaml(Path(path)), overrides or [])
    return from_dict(ModelConfig, data.get("model", {}), "model")


def builtin_config_path(name: str) -> Path:
    """Path of a config that ships with the package (`codec/configs/NAME.yaml`)."""
    directory = Path(__file__).parent / "configs"
    path = directory / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in directory.glob("*.yaml"))
        raise CodecError(f"no built-in config '{name}'; available: {', '.join(names)}")
    return path
