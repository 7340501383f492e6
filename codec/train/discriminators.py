"""Adversarial critics: multi-period (MPD), multi-scale waveform (MSD), multi-scale complex STFT
(MS-STFT) and multi-band multi-resolution STFT (MRD), combined freely by `build_discriminators`.

Every sub-discriminator maps audio [B, C, T] to (logits, features): logits is a tensor of any shape
(one score per patch), features the list of intermediate activations used by feature matching.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from codec.train.config import DiscriminatorConfig

Output = tuple[torch.Tensor, list[torch.Tensor]]

SLOPE = 0.1  # leaky ReLU slope throughout


def _run(layers: nn.ModuleList, head: nn.Module, x: torch.Tensor) -> Output:
    features = []
    for layer in layers:
        x = F.leaky_relu(layer(x), SLOPE)
        features.append(x)
    x = head(x)
    features.append(x)
    return x, features


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's period critic: folds the waveform into [T / p, p] and convolves along time only.

    Args:
        period: p. in_channels: audio channels C. channels: first layer width (x4 per layer, capped).
    """

    def __init__(self, period: int, *, in_channels: int = 1, channels: int = 32, max_channels: int = 1024) -> None:
        super().__init__()
        self.period = period
        widths = [in_channels] + [min(channels * 4**i, max_channels) for i in range(4)]
        self.layers = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), stride=(3, 1), padding=(2, 0)))
            for a, b in zip(widths, widths[1:], strict=False)
        )
        self.layers.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0))))
        self.head = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> Output:
        B, C, T = x.shape
        x = F.pad(x, (0, -T % self.period), mode="reflect" if T > self.period else "constant")
        return _run(self.layers, self.head, x.view(B, C, -1, self.period))


class ScaleDiscriminator(nn.Module):
    """MelGAN's waveform critic: strided grouped 1-D convolutions over (possibly pooled) audio.

    Args:
        in_channels: audio channels C. channels: first layer width (x4 per strided layer, capped at
        `max_channels`, by default 64 x channels: MelGAN's 16 -> 1024).
    """

    def __init__(self, *, in_channels: int = 1, channels: int = 16, max_channels: int | None = None) -> None:
        super().__init__()
        cap = max_channels or 64 * channels
        widths = [channels] + [min(channels * 4**i, cap) for i in range(1, 5)]
        layers = [weight_norm(nn.Conv1d(in_channels, channels, 15, padding=7))]
        for a, b in zip(widths, widths[1:], strict=False):
            groups = max(math.gcd(a, b) // 4, 1)
            layers.append(weight_norm(nn.Conv1d(a, b, 41, stride=4, padding=20, groups=groups)))
        layers.append(weight_norm(nn.Conv1d(widths[-1], widths[-1], 5, padding=2)))
        self.layers = nn.ModuleList(layers)
        self.head = weight_norm(nn.Conv1d(widths[-1], 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> Output:
        return _run(self.layers, self.head, x)


class MultiScale(nn.Module):
    """`scales` waveform critics at 1x, 1/2x, 1/4x ... of the sample rate (average pooling between)."""

    def __init__(self, scales: int, **kwargs) -> None:
        super().__init__()
        self.critics = nn.ModuleList(ScaleDiscriminator(**kwargs) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[Output]:
        out = []
        for i, critic in enumerate(self.critics):
            if i:
                x = F.avg_pool1d(x, 4, stride=2, padding=2)
            out.append(critic(x))
        return out


def _complex_spectrogram(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """[B, C, T] -> real and imaginary parts as channels, [B, 2C, frames, n_fft // 2 + 1] (time, frequency)."""
    B, C, T = x.shape
    window = torch.hann_window(n_fft, device=x.device, dtype=torch.float32)
    spec = torch.stft(
        x.reshape(B * C, T).float(), n_fft, hop_length=n_fft // 4, window=window, return_complex=True, center=True
    )
    spec = torch.view_as_real(spec)  # [B*C, Fr, frames, 2]
    return spec.view(B, C, *spec.shape[1:]).permute(0, 1, 4, 3, 2).reshape(B, 2 * C, spec.shape[2], spec.shape[1])


class STFTDiscriminator(nn.Module):
    """EnCodec-style critic on one complex STFT: 2-D convolutions, dilated in time, strided in frequency.

    Args:
        n_fft: window and FFT size (hop n_fft / 4). in_channels: audio channels C. channels: width.
    """

    def __init__(self, n_fft: int, *, in_channels: int = 1, channels: int = 32) -> None:
        super().__init__()
        self.n_fft = n_fft
        layers = [weight_norm(nn.Conv2d(2 * in_channels, channels, (3, 9), padding=(1, 4)))]
        for dilation in (1, 2, 4):
            layers.append(
                weight_norm(
                    nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(dilation, 1), padding=(dilation, 4))
                )
            )
        layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.head = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> Output:
        return _run(self.layers, self.head, _complex_spectrogram(x, self.n_fft))


class BandedSTFTDiscriminator(nn.Module):
    """DAC-style multi-band critic on one STFT resolution: each frequency band has its own convolution
    stack; their outputs are joined along frequency before a shared head.

    Args:
        n_fft: window and FFT size (hop n_fft / 4). bands: band edges as fractions of Nyquist, 0.0 to 1.0.
        in_channels: audio channels C. channels: width.
    """

    def __init__(self, n_fft: int, *, bands: tuple[float, ...], in_channels: int = 1, channels: int = 32) -> None:
        super().__init__()
        self.n_fft = n_fft
        bins = n_fft // 2 + 1
        edges = sorted({round(b * bins) for b in bands})
        self.bands = [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]

        def stack() -> nn.ModuleList:
            layers = [weight_norm(nn.Conv2d(2 * in_channels, channels, (3, 9), padding=(1, 4)))]
            for _ in range(3):
                layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))))
            layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
            return nn.ModuleList(layers)

        self.stacks = nn.ModuleList(stack() for _ in self.bands)
        self.head = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> Output:
        spec = _complex_spectrogram(x, self.n_fft)
        features, outputs = [], []
        for (lo, hi), layers in zip(self.bands, self.stacks, strict=True):
            h = spec[..., lo:hi]
            for layer in layers:
                h = F.leaky_relu(layer(h), SLOPE)
                features.append(h)
            outputs.append(h)
        x = self.head(torch.cat(outputs, dim=-1))
        features.append(x)
        return x, features


class Discriminators(nn.Module):
    """A set of critics run side by side: forward(x) returns one (logits, features) per sub-discriminator."""

    def __init__(self, critics: dict[str, nn.Module]) -> None:
        super().__init__()
        self.critics = nn.ModuleDict(critics)

    def forward(self, x: torch.Tensor) -> list[Output]:
        out: list[Output] = []
        for critic in self.critics.values():
            result = critic(x)
            out.extend(result if isinstance(result, list) else [result])
        return out


def build_discriminators(config: DiscriminatorConfig, *, audio_channels: int = 1) -> Discriminators:
    """The one place a discriminator config becomes modules (an empty `kinds` gives an empty set)."""
    critics: dict[str, nn.Module] = {}
    for kind in config.kinds:
        if kind == "mpd":
            for p in config.mpd_periods:
                critics[f"mpd_{p}"] = PeriodDiscriminator(p, in_channels=audio_channels, channels=config.mpd_channels)
        elif kind == "msd":
            critics["msd"] = MultiScale(config.msd_scales, in_channels=audio_channels, channels=config.msd_channels)
        elif kind == "msstft":
            for n in config.msstft_n_ffts:
                critics[f"msstft_{n}"] = STFTDiscriminator(
                    n, in_channels=audio_channels, channels=config.msstft_channels
                )
        elif kind == "mrd":
            for n in config.mrd_n_ffts:
                critics[f"mrd_{n}"] = BandedSTFTDiscriminator(
                    n, bands=config.mrd_bands, in_channels=audio_channels, channels=config.mrd_channels
                )
    return Discriminators(critics)
