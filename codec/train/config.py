"""Training configuration schema: the data, train, discriminator and loss sections of a config file.

A training config is a model config (codec/config.py, which also holds the strict loading helpers used here)
plus these four sections; `load_config` reads a whole file into a validated `Config`. This module imports only
the standard library, yaml, codec.config and codec.errors (none of the training extras).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from codec.config import ModelConfig, _check_choice, _read_yaml, apply_overrides, from_dict
from codec.errors import CodecError

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
    # an item coded with n quantizer levels weighs the phase-aware part of the complex term by min(1, n / phase_levels)
    # (its compressed magnitude part keeps full weight): few levels cannot carry phase, and a phase-aware MSE then
    # pulls magnitudes down. 0: full weight at every level count.
    phase_levels: int = 0
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
        if self.phase_levels < 0:
            raise CodecError(f"loss.phase_levels must be 0 (off) or a level count, got {self.phase_levels}")


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
    # standard deviations of Gaussian noise on the latent while the quantizer is bypassed (0 = none): the decoder
    # learns to expect an imprecise latent, so switching the codes on does not collapse it
    quantizer_warmup_noise: float = 0.0
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


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (with includes and dotted overrides) into a validated `Config`."""
    data = apply_overrides(_read_yaml(Path(path)), overrides or [])
    return from_dict(Config, data)
