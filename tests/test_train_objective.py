"""The reconstruction objective (stft, compressed complex terms) and the quantizer warm start."""

from __future__ import annotations

import pytest
import torch
from conftest import tone
from train_fixtures import make_data_dir, tiny_training_config

from codec.errors import CodecError
from codec.quantization.grvq import GroupResidualVQ
from codec.train.config import DiscriminatorConfig, LossConfig
from codec.train.discriminators import build_discriminators
from codec.train.losses import STFTLosses
from codec.train.objective import AdversarialObjective, Objective, ReconstructionObjective
from codec.train.trainer import Trainer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"), broken=False)


def speechlike(seconds: float = 0.5, rate: int = 16000) -> torch.Tensor:
    return torch.from_numpy(tone(seconds, rate, seed=3)).float()[None]  # [1, C, T]


def test_stft_terms_are_zero_for_identical_audio_and_see_what_magnitudes_miss():
    losses = STFTLosses(windows=(128, 256, 512))
    x = speechlike()
    same = losses(x, x)
    assert same["stft"] < 1e-5 and same["complex"] < 1e-9
    flipped = losses(-x, x)  # same magnitudes, opposite phase: only the complex term sees it
    assert flipped["stft"] < 1e-5 and flipped["complex"] > 0.05
    quiet = losses(0.1 * x, x)  # a quiet output costs in both
    assert quiet["stft"] > 0.5 and quiet["complex"] > 0.01


def test_complex_term_has_finite_gradients_at_silence():
    losses = STFTLosses(windows=(64, 128))
    y_hat = torch.zeros(2, 1, 1024, requires_grad=True)
    losses(y_hat, torch.zeros(2, 1, 1024))["complex"].backward()
    assert torch.isfinite(y_hat.grad).all()


def test_objective_computes_only_weighted_terms_and_sums_them():
    config = LossConfig(mel_windows=(64, 128), mel_bins=(10, 20), stft_windows=(64, 128), complex_weight=2.0)
    objective = ReconstructionObjective(config, sample_rate=16000)
    x = speechlike()
    terms = objective(0.5 * x, x)
    assert set(terms) == {"mel", "complex"}  # stft and waveform have weight 0
    total = objective.weighted_sum(terms)
    assert torch.isclose(total, config.mel_weight * terms["mel"] + 2.0 * terms["complex"])


def test_the_objective_weighs_commitment_from_its_own_table():
    config = LossConfig(mel_windows=(64, 128), mel_bins=(10, 20), waveform_weight=2.0, commitment_weight=0.25)
    objective = Objective(config, sample_rate=16000)
    x = speechlike()
    losses = objective(0.5 * x, x, commitment=torch.tensor(2.0))
    assert objective.weights["commitment"] == 0.25
    assert set(losses.logged) == {"mel", "waveform", "commitment", "generator"}
    expected = config.mel_weight * losses.logged["mel"] + 2.0 * losses.logged["waveform"] + 0.25 * 2.0
    assert torch.isclose(losses.generator, expected) and torch.equal(losses.logged["generator"], losses.generator)


def test_critic_and_generator_losses_each_reach_only_their_own_network():
    critics = build_discriminators(DiscriminatorConfig(kinds=("mpd",), mpd_periods=(2,), mpd_channels=4))
    config = LossConfig(mel_windows=(64, 128), mel_bins=(10, 20))
    objective = Objective(config, sample_rate=16000, adversarial=AdversarialObjective(critics, kind="hinge"))
    y = speechlike(0.1)
    y_hat = (0.5 * y).requires_grad_()
    critic = objective.critic_pass(y_hat, y)
    critic.loss.backward()
    assert y_hat.grad is None  # the critics judge a detached output
    before = [p.grad.clone() for p in critics.parameters()]
    losses = objective(y_hat, y, commitment=torch.tensor(0.0), critics=critic)
    losses.generator.backward()
    assert {"adversarial", "feature_matching", "discriminator"} <= set(losses.logged)
    assert y_hat.grad is not None and y_hat.grad.abs().sum() > 0
    assert all(torch.equal(a, p.grad) for a, p in zip(before, critics.parameters(), strict=True))  # critics frozen
    assert all(p.requires_grad for p in critics.parameters())  # and thawed again


def test_level_term_measures_the_level_error_in_db_and_pulls_a_quiet_output_up():
    config = LossConfig(mel_windows=(64, 128), mel_bins=(10, 20), level_weight=3.0)
    objective = ReconstructionObjective(config, sample_rate=16000)
    x = torch.cat([speechlike(), 0.1 * speechlike()])  # two items at different levels
    assert float(objective(x, x)["level"]) < 1e-6
    # the second item 6 dB low, the first exact: mean |dB / 20| = 6 / 20 / 2
    y_hat = x * torch.tensor([1.0, 10 ** (-6 / 20)])[:, None, None]
    assert abs(float(objective(y_hat, x)["level"]) - 0.15) < 1e-4
    gain = torch.tensor(0.5, requires_grad=True)
    objective(gain * x, x)["level"].backward()
    assert gain.grad < 0  # raising the gain lowers the loss
    silent = torch.zeros_like(x, requires_grad=True)
    objective(silent, x)["level"].backward()
    assert torch.isfinite(silent.grad).all()


def test_phase_levels_lighten_the_phase_term_only_for_items_coded_with_few_levels():
    config = LossConfig(mel_windows=(64, 128), mel_bins=(10, 20), stft_windows=(64, 128), complex_weight=1.0)
    x = torch.cat([speechlike(), speechlike()])
    flipped = -x  # same magnitudes, opposite phase: all of the complex term is its phase-aware part
    full = ReconstructionObjective(config, sample_rate=16000)(flipped, x, levels=torch.tensor([1, 8]))["complex"]
    ramp = ReconstructionObjective(LossConfig(**{**config.__dict__, "phase_levels": 4}), sample_rate=16000)
    # item 1 (one level) weighs 1/4, item 2 (eight levels) weighs 1: (0.25 + 1) / 2 of the full term
    assert torch.isclose(ramp(flipped, x, levels=torch.tensor([1, 8]))["complex"], full * 0.625, rtol=1e-4)
    assert torch.isclose(ramp(flipped, x, levels=torch.tensor([4, 8]))["complex"], full, rtol=1e-4)
    assert torch.isclose(ramp(flipped, x)["complex"], full, rtol=1e-4)  # unquantized: full weight
    # a magnitude error still costs in full at one level
    quiet = 0.5 * x
    assert ramp(quiet, x, levels=torch.tensor([1, 1]))["complex"] > 0.3 * ramp(quiet, x)["complex"]


def test_loss_config_is_validated():
    with pytest.raises(CodecError, match="complex_power"):
        LossConfig(complex_power=0.0)
    with pytest.raises(CodecError, match="stft_windows"):
        LossConfig(stft_windows=())
    with pytest.raises(CodecError, match="phase_levels"):
        LossConfig(phase_levels=-1)


def test_quantizer_bypass_passes_the_latent_and_leaves_codebooks_alone():
    q = GroupResidualVQ(dim=8, num_groups=2, num_levels=3, codebook_size=16).train()
    z = torch.randn(2, 8, 5, requires_grad=True)
    out = q(z, bypass=True)
    assert torch.equal(out.quantized, z) and out.codes.shape == (2, 0, 5) and float(out.commitment_loss) == 0
    assert not bool(q.initialized)
    out.quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_init_codebooks_fits_every_level_on_residuals():
    torch.manual_seed(0)
    q = GroupResidualVQ(dim=8, num_groups=2, num_levels=3, codebook_size=16, kmeans_iters=5)
    z = torch.randn(4, 8, 100)
    q.init_codebooks(z)
    assert bool(q.initialized)
    norms = q.codebooks.norm(dim=-1).mean(-1)  # [G, L]: later levels code smaller residuals
    assert (norms[:, 1:] < norms[:, :-1]).all()
    q.eval()
    errors = [float((q.decode(q.encode(z, n)) - z).square().mean()) for n in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]


def test_trainer_warm_start_bypasses_then_starts_codebooks_from_kmeans(tmp_path, data_dir):
    config = tiny_training_config(
        tmp_path,
        data_dir,
        "discriminator.kinds=[]",
        "train.quantizer_warmup_steps=2",
        "train.kmeans_batches=2",
        "loss.stft_windows=[64,128]",
        "loss.stft_weight=1.0",
        "loss.complex_weight=10.0",
        valid=False,
    )
    trainer = Trainer(config, progress_bar=False)
    trainer.log.enabled = False
    before = trainer.model.quantizer.codebooks.clone()
    for _ in range(2):
        metrics = trainer.train_step()
        assert metrics["commitment"] == 0 and {"stft", "complex"} <= set(metrics)
    assert not bool(trainer.model.quantizer.initialized)
    assert torch.equal(trainer.model.quantizer.codebooks, before)
    metrics = trainer.train_step()
    assert bool(trainer.model.quantizer.initialized) and metrics["commitment"] > 0
    assert not torch.equal(trainer.model.quantizer.codebooks, before)
    trainer.close()
