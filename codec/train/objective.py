"""The generator's reconstruction objective: every reconstruction term and its weight, in one place.

Terms (a weight of 0 turns a term off and skips its computation):

- ``mel``: multi-scale mel, L1 of log10 and of linear mel magnitudes (`MelLoss`), windows 32 to 2048;
- ``stft``: multi-resolution STFT, spectral convergence + L1 of log magnitudes (Yamamoto et al., 2020,
  Parallel WaveGAN), averaged over window sizes;
- ``complex``: power-law compressed complex STFT, MSE of S |S|^(p - 1) between output and input plus
  MSE of the compressed magnitudes |S|^p (p = 0.3, as in speech enhancement: MP-SENet, Lu et al., 2023).
  Unlike the magnitude terms it is phase-aware, so it rewards a waveform that lines up with the
  input, without a waveform term's pull towards a quiet, averaged output;
- ``waveform``: L1 between waveforms;
- ``level``: per item, |log10| of the output's RMS over the input's (the level error in dB / 20), which
  offsets the waveform term's pull towards a quiet output.

The adversarial and feature-matching weights live here too, so the trainer reads one weight table.
The commitment loss comes from the quantizer itself.
"""

from __future__ import annotations

import torch
from torch import nn

from codec.train.config import LossConfig
from codec.train.losses import MelLoss, level_l1, waveform_l1


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


class ReconstructionObjective(nn.Module):
    """The reconstruction terms and the weight of every generator term (reconstruction and adversarial).

    Args:
        config: the loss section of the training config. sample_rate: audio rate (mel filters).
    """

    def __init__(self, config: LossConfig, *, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.mel = MelLoss(sample_rate=sample_rate, windows=config.mel_windows, bins=config.mel_bins)
        self.stft = STFTLosses(windows=config.stft_windows, power=config.complex_power)
        self.weights = {
            "mel": config.mel_weight,
            "stft": config.stft_weight,
            "complex": config.complex_weight,
            "waveform": config.waveform_weight,
            "level": config.level_weight,
            "adversarial": config.adversarial_weight,
            "feature_matching": config.feature_matching_weight,
        }

    def forward(
        self, y_hat: torch.Tensor, y: torch.Tensor, *, levels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Unweighted reconstruction terms (those with a weight above 0; mel always, for logging).

        levels: optional [B] quantizer levels each item was coded with (None: unquantized); with
        `loss.phase_levels` it sets each item's weight of the phase-aware complex part.
        """
        w = self.weights
        terms = {"mel": self.mel(y_hat, y)}
        if w["stft"] > 0 or w["complex"] > 0:
            phase_weight = None
            if levels is not None and self.config.phase_levels > 0:
                phase_weight = (levels.float() / self.config.phase_levels).clamp(max=1.0)
            terms.update(
                self.stft(y_hat, y, magnitude=w["stft"] > 0, complex=w["complex"] > 0, phase_weight=phase_weight)
            )
        if w["waveform"] > 0:
            terms["waveform"] = waveform_l1(y_hat, y)
        if w["level"] > 0:
            terms["level"] = level_l1(y_hat, y)
        return terms

    def weighted_sum(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[k] * v for k, v in terms.items())
