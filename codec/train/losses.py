"""Loss terms: multi-scale mel, multi-resolution and compressed complex STFT, waveform L1, output level,
adversarial (hinge or least squares) and feature matching. The commitment loss comes from the quantizer itself
(`QuantizerOutput`); which terms a step uses, and their weights, is codec/train/objective.py.

Mel filters are librosa's (Slaney-normalised, as DAC and EnCodec use); spectrograms are torch.stft
in fp32 whatever the autocast context.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MelLoss(nn.Module):
    """Mean over window sizes of L1(log10 mel) + L1(mel), for audio [B, C, T] pairs.

    Args:
        sample_rate: audio rate. windows: STFT window sizes (hop = window / 4). bins: mel bands per window.
        clamp: floor of mel magnitudes before the log.
    """

    def __init__(
        self, *, sample_rate: int, windows: tuple[int, ...], bins: tuple[int, ...], clamp: float = 1e-5
    ) -> None:
        super().__init__()
        from librosa.filters import mel  # training-only dependency, imported on use

        self.windows, self.clamp = tuple(windows), clamp
        for n_fft, n_mels in zip(windows, bins, strict=True):
            filters = torch.from_numpy(mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2))
            self.register_buffer(f"mel_{n_fft}", filters.float(), persistent=False)
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def spectrogram(self, x: torch.Tensor, n_fft: int) -> torch.Tensor:
        """Mel magnitudes [B * C, n_mels, frames] of x [B, C, T]."""
        x = x.reshape(-1, x.shape[-1]).float()
        spec = torch.stft(
            x, n_fft, hop_length=n_fft // 4, window=getattr(self, f"window_{n_fft}"), center=True, return_complex=True
        ).abs()
        return getattr(self, f"mel_{n_fft}") @ spec

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(y.device.type, enabled=False):
            total = y.new_zeros((), dtype=torch.float32)
            for n_fft in self.windows:
                a, b = self.spectrogram(y_hat, n_fft), self.spectrogram(y, n_fft)
                log_a, log_b = a.clamp_min(self.clamp).log10(), b.clamp_min(self.clamp).log10()
                total = total + F.l1_loss(log_a, log_b) + F.l1_loss(a, b)
            return total / len(self.windows)


class STFTLosses(nn.Module):
    """Multi-resolution magnitude and compressed complex STFT losses for audio [B, C, T] pairs.

    Args:
        windows: STFT sizes (Hann window, hop = window / 4). power: magnitude compression exponent p.
        magnitude: compute spectral convergence + log magnitude. complex: compute the compressed complex term.
        eps: floor of magnitudes before the log and the power.
    """

    def __init__(self, *, windows: tuple[int, ...], power: float = 0.3, eps: float = 1e-5) -> None:
        super().__init__()
        self.windows, self.power, self.eps = tuple(windows), power, eps
        for n_fft in self.windows:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def _spectrum(self, x: torch.Tensor, n_fft: int) -> torch.Tensor:
        x = x.reshape(-1, x.shape[-1]).float()
        window = getattr(self, f"window_{n_fft}")
        # normalized: magnitudes do not grow with the window size, so every resolution weighs alike
        return torch.stft(
            x, n_fft, hop_length=n_fft // 4, window=window, center=True, normalized=True, return_complex=True
        )

    def forward(
        self,
        y_hat: torch.Tensor,
        y: torch.Tensor,
        *,
        magnitude: bool = True,
        complex: bool = True,
        phase_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """{'stft': SC + log magnitude, 'complex': compressed complex + compressed magnitude} (those asked for).

        phase_weight: optional [B] weight of each item's phase-aware complex part (default 1 for every item).
        """
        rows = None
        if phase_weight is not None:
            rows = phase_weight.float().repeat_interleave(y.shape[1] if y.dim() == 3 else 1)  # one per B * C row
        out: dict[str, torch.Tensor] = {}
        with torch.autocast(y.device.type, enabled=False):
            mag_total = y.new_zeros((), dtype=torch.float32)
            cplx_total = y.new_zeros((), dtype=torch.float32)
            for n_fft in self.windows:
                s_hat, s = self._spectrum(y_hat, n_fft), self._spectrum(y, n_fft)
                # sqrt(|S|^2 + eps^2): a smooth magnitude, so gradients stay finite at silent bins
                m_hat = (s_hat.real.square() + s_hat.imag.square() + self.eps**2).sqrt()
                m = (s.real.square() + s.imag.square() + self.eps**2).sqrt()
                if magnitude:
                    sc = (m_hat - m).norm() / m.norm().clamp_min(self.eps)
                    mag_total = mag_total + sc + (m_hat.log() - m.log()).abs().mean()
                if complex:
                    c_hat, c = m_hat.pow(self.power), m.pow(self.power)
                    phase_hat, phase = s_hat / m_hat, s / m
                    err = (c_hat * phase_hat - c * phase).abs().square()
                    phase_term = err.mean() if rows is None else (err.mean((1, 2)) * rows).mean()
                    cplx_total = cplx_total + phase_term + (c_hat - c).square().mean()
            if magnitude:
                out["stft"] = mag_total / len(self.windows)
            if complex:
                out["complex"] = cplx_total / len(self.windows)
        return out


def waveform_l1(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(y_hat.float(), y.float())


def level_l1(y_hat: torch.Tensor, y: torch.Tensor, *, floor: float = 1e-4) -> torch.Tensor:
    """Mean over items of |log10(rms(y_hat) / rms(y))|: the output level error in dB / 20, per item.

    A waveform L1 rewards a quiet output wherever the phase is uncertain; this term pulls the item's level
    back to the input's. RMS values are floored at `floor` (-80 dBFS) so silent items give finite gradients.
    """

    def rms(a: torch.Tensor) -> torch.Tensor:
        a = a.float().reshape(a.shape[0], -1)
        return (a.square().mean(dim=1) + floor**2).sqrt()

    return (rms(y_hat).log10() - rms(y).log10()).abs().mean()


def generator_adversarial(fake_logits: list[torch.Tensor], kind: str) -> torch.Tensor:
    """Mean over critics of hinge max(0, 1 - D(G(x))) or least squares (1 - D(G(x)))^2."""
    losses = [F.relu(1 - f.float()).mean() if kind == "hinge" else ((1 - f.float()) ** 2).mean() for f in fake_logits]
    return torch.stack(losses).mean()


def discriminator_adversarial(
    real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor], kind: str
) -> torch.Tensor:
    """Mean over critics of hinge max(0, 1 - D(x)) + max(0, 1 + D(G(x))) or (1 - D(x))^2 + D(G(x))^2."""
    losses = []
    for r, f in zip(real_logits, fake_logits, strict=True):
        r, f = r.float(), f.float()
        if kind == "hinge":
            losses.append(F.relu(1 - r).mean() + F.relu(1 + f).mean())
        else:
            losses.append(((1 - r) ** 2).mean() + (f**2).mean())
    return torch.stack(losses).mean()


def feature_matching(real_features: list[list[torch.Tensor]], fake_features: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean over critics and layers of L1 between features of real (held fixed) and generated audio."""
    losses = [
        F.l1_loss(f.float(), r.detach().float())
        for rs, fs in zip(real_features, fake_features, strict=True)
        for r, f in zip(rs, fs, strict=True)
    ]
    return torch.stack(losses).mean()
