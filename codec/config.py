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
    def istft_hop(self) -> int:
        """Samples per frame at the istft head: the upsampling that the stages after it would have done."""
        return self.patch_size * _prod(self.ratios[: len(self.ratios) - self.istft_stage])


QUANTIZER_GRADIENTS = ("straight_through", "rotation")  # how the decoder's gradient reaches the encoder
CODEBOOK_UPDATES = ("ema", "simvq")  # how codebooks learn


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

    def __post_init__(self) -> None:
        _check_choice("model.quantizer.gradient", self.gradient, QUANTIZER_GRADIENTS)
        _check_choice("model.quantizer.codebook_update", self.codebook_update, CODEBOOK_UPDATES)


# QuantizerConfig fields that only steer training: two models that differ in these alone are the same architecture
QUANTIZER_TRAINING_KEYS = ("decay", "epsilon", "kmeans_iters", "dead_code_threshold", "dropout", "gradient")


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
        enc, dec = self.encoder, self.decoder
        if enc.patch_size * _prod(enc.ratios) != dec.patch_size * _prod(dec.ratios):
            problems.append(
                f"encoder patch_size x ratios ({enc.patch_size} x {enc.ratios}) and decoder patch_size x ratios "
                f"({dec.patch_size} x {dec.ratios}) must have the same product (the hop length)"
            )
        if any(r < 1 for r in enc.ratios + dec.ratios) or min(enc.patch_size, dec.patch_size) < 1:
            problems.append("ratios and patch_size must be positive")
        if enc.head != "waveform":
            problems.append(f"encoder.head is {enc.head!r}; the output head is a decoder setting")
        elif dec.head == "istft":
            n_fft = dec.istft_n_fft or 4 * dec.istft_hop
            if n_fft % 2 or n_fft % dec.istft_hop or n_fft < 3 * dec.istft_hop:
                problems.append(
                    f"decoder.istft_n_fft {n_fft} must be even, a multiple of the istft hop {dec.istft_hop} "
                    f"and at least 3 times it"
                )
        if problems:
            raise CodecError("invalid model config: " + "; ".join(problems))

    @property
    def hop_length(self) -> int:
        return self.encoder.patch_size * _prod(self.encoder.ratios)


DISCRIMINATOR_KINDS = ("mpd", "msd", "msstft", "mrd")


@dataclass(frozen=True)
class DataConfig:
    """Training data: Kaldi-style data dirs (wav.scp, utt2dur, optional segments), cropped at random."""

    train_dir: str = ""  # data dir to train on (required by `codec train`)
    valid_dir: str | None = None  # held-out data dir for validation (none = no validation)
    segment_seconds: float = 1.0  # length of a training crop (rounded down to whole frames)
    min_seconds: float = 0.0  # utterances shorter than this (per utt2dur) are not used for training
    valid_segment_seconds: float = 4.0  # validation uses the first this-many seconds of each utterance
    valid_items: int = 16  # validation utterances (the first ones of valid_dir)
    channel_mode: str = "mix"  # files with more channels than the model: mix | first | random
    loudness_db: float | None = None  # normalise each crop's RMS to this dBFS (none = keep levels)
    max_gain_db: float = 20.0  # cap on the loudness normalisation gain (quiet crops stay quiet)
    num_workers: int = 2  # DataLoader worker processes per rank (0 = load in the training process)

    def __post_init__(self) -> None:
        _check_choice("data.channel_mode", self.channel_mode, ("mix", "first", "random"))
        if self.segment_seconds <= 0 or self.valid_segment_seconds <= 0:
            raise CodecError("data.segment_seconds and data.valid_segment_seconds must be positive")
        if self.num_workers < 0 or self.valid_items < 0:
            raise CodecError("data.num_workers and data.valid_items must be zero or more")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Adversarial critics; `kinds` picks any combination of mpd, msd, msstft, mrd (empty = no GAN)."""

    kinds: tuple[str, ...] = ("mpd", "mrd")
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # multi-period: one 2-D critic per period
    mpd_channels: int = 32  # width of the first layer (x4 per layer, capped at 1024)
    msd_scales: int = 3  # multi-scale waveform: critics at 1x, 2x, 4x ... average-pooled audio
    msd_channels: int = 16
    msstft_n_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128)  # multi-scale complex STFT (hop = n_fft / 4)
    msstft_channels: int = 32
    mrd_n_ffts: tuple[int, ...] = (2048, 1024, 512)  # multi-band multi-resolution STFT
    mrd_bands: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # band edges as fractions of Nyquist
    mrd_channels: int = 32

    def __post_init__(self) -> None:
        for kind in self.kinds:
            _check_choice("discriminator.kinds", kind, DISCRIMINATOR_KINDS)
        if len(set(self.kinds)) != len(self.kinds):
            raise CodecError(f"discriminator.kinds lists a kind twice: {list(self.kinds)}")
        edges = self.mrd_bands
        if len(edges) < 2 or edges[0] != 0.0 or edges[-1] != 1.0 or list(edges) != sorted(set(edges)):
            raise CodecError("discriminator.mrd_bands must rise strictly from 0.0 to 1.0, e.g. [0.0, 0.25, 0.5, 1.0]")


@dataclass(frozen=True)
class LossConfig:
    """Loss terms and their weights (a weight of 0 turns a term off)."""

    mel_windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)  # STFT window sizes (hop = window / 4)
    mel_bins: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)  # mel bands per window size
    mel_weight: float = 15.0  # multi-scale mel: L1 of log10 and of linear mel magnitudes, averaged over scales
    waveform_weight: float = 0.0  # L1 between waveforms
    level_weight: float = 0.0  # per item |log10(output RMS / input RMS)|: the level error in dB / 20
    stft_windows: tuple[int, ...] = (128, 256, 512, 1024, 2048)  # STFT sizes of the stft and complex terms
    stft_weight: float = 0.0  # multi-resolution STFT: spectral convergence + L1 of log magnitudes
    complex_weight: float = 0.0  # power-law compressed complex STFT (phase-aware) + compressed magnitude MSE
    complex_power: float = 0.3  # compression exponent of the complex term
    adversarial: str = "hinge"  # hinge | lsgan
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 2.0
    commitment_weight: float = 1.0  # pulls encoder outputs toward their codewords (codebooks learn by EMA)
    balancer: bool = False  # EnCodec-style: weights set each term's share of the gradient at the decoder output
    balancer_total_norm: float = 1.0  # gradient norm the balanced terms add up to
    balancer_decay: float = 0.999  # EMA decay of the per-term gradient norms

    def __post_init__(self) -> None:
        _check_choice("loss.adversarial", self.adversarial, ("hinge", "lsgan"))
        if len(self.mel_windows) != len(self.mel_bins) or not self.mel_windows:
            raise CodecError("loss.mel_windows and loss.mel_bins must be non-empty lists of the same length")
        if not self.stft_windows or min(self.stft_windows) < 4:
            raise CodecError("loss.stft_windows must be a non-empty list of STFT sizes of at least 4")
        if not 0 < self.complex_power <= 1:
            raise CodecError(f"loss.complex_power must lie in (0, 1], got {self.complex_power}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, precision, checkpoints and logging of `codec train`."""

    output_dir: str = "exp/codec"  # checkpoints, TensorBoard logs and the resolved config go here
    seed: int = 1234
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    batch_size: int = 16  # items per rank per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = batch_size x grad_accum x ranks)
    max_steps: int = 400000
    lr: float = 3e-4  # generator learning rate
    lr_d: float | None = None  # discriminator learning rate (none = lr)
    betas: tuple[float, ...] = (0.8, 0.99)
    weight_decay: float = 0.0
    lr_schedule: str = "exponential"  # constant | cosine | exponential
    warmup_steps: int = 0  # linear warm-up from 0
    lr_gamma: float = 0.999996  # exponential: factor per step
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of lr
    grad_clip: float = 1000.0  # generator gradient-norm clip (0 = off)
    grad_clip_d: float = 10.0  # discriminator gradient-norm clip (0 = off)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; the quantizer always runs in fp32)
    disc_start_step: int = 0  # adversarial training begins at this step (reconstruction only before)
    # quantizer warm start: for this many steps the quantizer is bypassed (encoder and decoder learn to
    # reconstruct first); then every level's codebooks start from k-means on the real residuals of
    # `kmeans_batches` batches of the trained encoder's latents
    quantizer_warmup_steps: int = 0
    kmeans_batches: int = 32
    ema_decay: float | None = None  # keep an EMA of generator weights (e.g. 0.999); exported when present
    # fine-tune: start a new run from these generator weights (a step_*.pt, a training output dir or a .safetensors
    # model file, e.g. the shipped grvq16k) with fresh optimizers, discriminators and step 0; the model config
    # must match. Ignored when the run resumes from its own checkpoints.
    init_from: str | None = None
    log_every: int = 50
    eval_every: int = 2000
    checkpoint_every: int = 2000
    keep_checkpoints: int = 3  # keep the last k training checkpoints
    max_bad_steps: int = 10  # stop after this many NaN/Inf steps in a row (each one is skipped)
    audio_samples: int = 2  # validation items logged as audio and mel images

    def __post_init__(self) -> None:
        _check_choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _check_choice("train.lr_schedule", self.lr_schedule, ("constant", "cosine", "exponential"))
        _check_choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_steps < 1:
            raise CodecError("train.batch_size, train.grad_accum and train.max_steps must be at least 1")
        if min(self.log_every, self.eval_every, self.checkpoint_every, self.keep_checkpoints, self.max_bad_steps) < 1:
            raise CodecError(
                "train.log_every, eval_every, checkpoint_every, keep_checkpoints and max_bad_steps must be at least 1"
            )
        if len(self.betas) != 2:
            raise CodecError(f"train.betas must hold two numbers, got {list(self.betas)}")


@dataclass(frozen=True)
class Config:
    """A whole config file: the model, and how to train it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)


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
