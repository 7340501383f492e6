"""The training objective: every loss of a step and every weight, in one place (the trainer only loops).

Generator terms, each with its weight in `Objective.weights` (a weight of 0 turns a term off and skips its
computation; the loss terms themselves are codec/train/losses.py):

- ``mel``: multi-scale mel, L1 of log10 and of linear mel magnitudes, windows 32 to 2048 (always computed, for
  the log);
- ``stft``: multi-resolution STFT, spectral convergence + L1 of log magnitudes (Yamamoto et al., 2020,
  Parallel WaveGAN), averaged over window sizes;
- ``complex``: power-law compressed complex STFT, MSE of S |S|^(p - 1) between output and input plus
  MSE of the compressed magnitudes |S|^p (p = 0.3, as in speech enhancement: MP-SENet, Lu et al., 2023).
  Unlike the magnitude terms it is phase-aware, so it rewards a waveform that lines up with the
  input, without a waveform term's pull towards a quiet, averaged output; with `loss.phase_levels` an item
  coded with few quantizer levels weighs its phase-aware part less;
- ``waveform``: L1 between waveforms;
- ``level``: per item, |log10| of the output's RMS over the input's (the level error in dB / 20), which
  offsets the waveform term's pull towards a quiet output;
- ``adversarial``, ``feature_matching``: the critics' verdict on the output, and the L1 between their features
  of the output and of the input (`AdversarialObjective`), once the trainer lets the critics in;
- ``commitment``: the encoder's pull towards its codewords, from the quantizer (`QuantizerOutput`).

The generator's loss is the weighted sum of its terms or, with `loss.balancer`, EnCodec's balancer over the terms
that depend on the output (all but commitment, which is added as weighted). The critics' loss
(``discriminator``) is `AdversarialObjective.critic_pass`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from codec.train.balancer import Balancer
from codec.train.config import LossConfig
from codec.train.losses import (
    MelLoss,
    STFTLosses,
    discriminator_adversarial,
    feature_matching,
    generator_adversarial,
    level_l1,
    waveform_l1,
)


def loss_weights(config: LossConfig) -> dict[str, float]:
    """The weight of every generator term: the one table the sum, the balancer and the log read."""
    return {
        "mel": config.mel_weight,
        "stft": config.stft_weight,
        "complex": config.complex_weight,
        "waveform": config.waveform_weight,
        "level": config.level_weight,
        "adversarial": config.adversarial_weight,
        "feature_matching": config.feature_matching_weight,
        "commitment": config.commitment_weight,
    }


class ReconstructionObjective(nn.Module):
    """The reconstruction terms of the generator (those with a weight above 0; mel always, for logging).

    Args:
        config: the loss section of the training config. sample_rate: audio rate (mel filters).
    """

    def __init__(self, config: LossConfig, *, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.mel = MelLoss(sample_rate=sample_rate, windows=config.mel_windows, bins=config.mel_bins)
        self.stft = STFTLosses(windows=config.stft_windows, power=config.complex_power)
        self.weights = loss_weights(config)

    def forward(
        self, y_hat: torch.Tensor, y: torch.Tensor, *, levels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Unweighted reconstruction terms of y_hat against y [B, C, T].

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


@dataclass
class CriticPass:
    """The critics on real and generated audio: their loss, and what feature matching reuses."""

    loss: torch.Tensor  # the critics' loss; its backward reaches only the critics (the output is detached)
    real_features: list[list[torch.Tensor]]  # per critic, its features of the real audio


class AdversarialObjective:
    """The critics' side of the objective: their loss on real against generated audio, and the generator's
    adversarial and feature-matching terms.

    Args:
        critics: the discriminators (`codec.train.discriminators.Discriminators`).
        kind: `hinge` or `lsgan` (least squares).
        synced: what runs the critics' own pass: their DDP wrapper under torchrun (default: `critics`). The
            generator's pass runs `critics` itself, frozen, so it touches neither their gradients nor their
            DDP hooks.
        autocast: a context factory for the critics' forward passes (the trainer's precision).
    """

    def __init__(
        self,
        critics: nn.Module,
        *,
        kind: str,
        synced: nn.Module | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.critics, self.kind = critics, kind
        self.synced = synced if synced is not None else critics
        self.autocast = autocast

    def critic_pass(self, y_hat: torch.Tensor, y: torch.Tensor) -> CriticPass:
        """The critics on real audio y and generated y_hat (detached) [B, C, T], in one pass."""
        B = y.shape[0]
        with self.autocast():
            both = self.synced(torch.cat([y, y_hat.detach()]))
        loss = discriminator_adversarial([o[0][:B] for o in both], [o[0][B:] for o in both], self.kind)
        return CriticPass(loss=loss, real_features=[[f[:B] for f in o[1]] for o in both])

    def generator_terms(self, y_hat: torch.Tensor, real: CriticPass) -> dict[str, torch.Tensor]:
        """{'adversarial', 'feature_matching'} for y_hat [B, C, T], the critics frozen."""
        self.critics.requires_grad_(False)
        try:
            with self.autocast():
                fake = self.critics(y_hat)
        finally:
            self.critics.requires_grad_(True)
        return {
            "adversarial": generator_adversarial([o[0] for o in fake], self.kind),
            "feature_matching": feature_matching(real.real_features, [o[1] for o in fake]),
        }


@dataclass
class Losses:
    """One micro-batch's generator loss and what the log shows of it."""

    generator: torch.Tensor  # what the generator's backward takes (the balancer's surrogate when it is on)
    logged: dict[str, torch.Tensor]  # detached: every term, commitment, discriminator, generator or balancer norms


class Objective(nn.Module):
    """Every loss of a training step with its weight (module docstring): reconstruction, adversarial and
    feature matching (with critics), commitment, and the critics' own loss.

    Args:
        config: the loss section of the training config. sample_rate: audio rate (mel filters).
        adversarial: the critics' side (None: no critics, reconstruction only).
    """

    def __init__(
        self, config: LossConfig, *, sample_rate: int, adversarial: AdversarialObjective | None = None
    ) -> None:
        super().__init__()
        self.reconstruction = ReconstructionObjective(config, sample_rate=sample_rate)
        self.mel = self.reconstruction.mel
        self.weights = self.reconstruction.weights
        self.adversarial = adversarial
        self.balancer = None
        if config.balancer:  # commitment does not depend on the output: it stays outside the balancer
            balanced = {k: w for k, w in self.weights.items() if k != "commitment"}
            self.balancer = Balancer(balanced, total_norm=config.balancer_total_norm, decay=config.balancer_decay)

    def critic_pass(self, y_hat: torch.Tensor, y: torch.Tensor) -> CriticPass:
        """The critics' loss on y against y_hat (see `AdversarialObjective.critic_pass`)."""
        if self.adversarial is None:
            raise RuntimeError("this objective has no critics (discriminator.kinds is empty)")
        return self.adversarial.critic_pass(y_hat, y)

    def forward(
        self,
        y_hat: torch.Tensor,
        y: torch.Tensor,
        *,
        commitment: torch.Tensor,
        levels: torch.Tensor | None = None,
        critics: CriticPass | None = None,
    ) -> Losses:
        """The generator's loss for output y_hat against y [B, C, T].

        commitment: the quantizer's commitment loss (unweighted). levels: optional [B] quantizer levels each item
        was coded with (`ReconstructionObjective`). critics: this micro-batch's critic pass, whose real features
        the feature-matching term reuses; None leaves the adversarial terms out (no critics, or before
        `train.disc_start_step`).
        """
        terms = self.reconstruction(y_hat, y, levels=levels)
        logged: dict[str, torch.Tensor] = {"commitment": commitment.detach()}
        if critics is not None:
            terms.update(self.adversarial.generator_terms(y_hat, critics))
            logged["discriminator"] = critics.loss.detach()
        weighted_commitment = self.weights["commitment"] * commitment
        if self.balancer is not None:
            grad, norms = self.balancer.gradient(terms, y_hat)
            generator = (y_hat * grad.detach()).sum() + weighted_commitment
            logged.update({f"balancer_norm_{k}": torch.tensor(v) for k, v in norms.items()})
        else:
            generator = self.reconstruction.weighted_sum(terms) + weighted_commitment
            logged["generator"] = generator.detach()
        logged.update({k: v.detach() for k, v in terms.items()})
        return Losses(generator=generator, logged=logged)
