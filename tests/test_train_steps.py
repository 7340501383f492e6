"""Training building blocks on a tiny config: config sections, data, one step per critic, losses, robustness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone
from train_fixtures import make_data_dir, tiny_training_config

from codec.config import builtin_config_path
from codec.datadir import read_data_dir
from codec.errors import CodecError
from codec.quantization.grvq import GroupResidualVQ
from codec.train import checkpoints
from codec.train.config import load_config
from codec.train.data import AudioSpec, CropDataset
from codec.train.trainer import Trainer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"))


def quiet_trainer(config, **kwargs) -> Trainer:
    trainer = Trainer(config, progress_bar=False, **kwargs)
    trainer.log.enabled = False
    return trainer


def test_training_sections_are_strict_and_validated():
    path = builtin_config_path("grvq16k")
    config = load_config(path, ["train.lr=1e-4", "discriminator.kinds=[msd,mrd]", "data.loudness_db=-23"])
    assert config.train.lr == 1e-4 and config.discriminator.kinds == ("msd", "mrd")
    assert config.data.loudness_db == -23.0 and config.model.sample_rate == 16000
    with pytest.raises(CodecError, match="unknown config key 'train.learning_rate'.*valid keys here: .*lr"):
        load_config(path, ["train.learning_rate=1"])
    with pytest.raises(CodecError, match="discriminator.kinds.*'hifi'.*mpd, msd, msstft, mrd"):
        load_config(path, ["discriminator.kinds=[hifi]"])
    with pytest.raises(CodecError, match="train.precision"):
        load_config(path, ["train.precision=fp8"])
    with pytest.raises(CodecError, match="mel_windows and loss.mel_bins"):
        load_config(path, ["loss.mel_bins=[10]"])


def test_crops_are_resampled_mixed_deterministic_and_skip_unreadable_files(tmp_path):
    root = make_data_dir(tmp_path / "d", count=3, rate=16000)  # utt02 is stereo; broken.wav is not audio
    spec = AudioSpec(sample_rate=8000, channels=1, loudness_db=-20.0)
    data = CropDataset(read_data_dir(root), spec=spec, length=1596, seed=7)
    a, b = data[(0, 0, 5, 2)], data[(0, 0, 5, 2)]
    assert a["audio"].shape == (1, 1596) and a["audio"].dtype == torch.float32
    assert torch.equal(a["audio"], b["audio"]) and a["skipped"] == []
    assert not torch.equal(a["audio"], data[(1, 0, 5, 2)]["audio"])  # another epoch, another crop
    rms_db = 20 * math.log10(float(a["audio"].pow(2).mean().sqrt()))
    assert abs(rms_db + 20) < 0.5
    fallback = data[(0, 0, 0, 3)]  # index 3 is the broken file: the next utterance stands in
    assert fallback["audio"].shape == (1, 1596)
    assert fallback["skipped"][0][0] == "broken" and "broken.wav" in fallback["skipped"][0][1]


def test_segments_and_channel_modes(tmp_path):
    rate = 16000
    stereo = np.stack([tone(2.0, rate)[0], np.zeros(2 * rate, dtype=np.float32)])
    sf.write(tmp_path / "rec.wav", stereo.T, rate)
    (tmp_path / "wav.scp").write_text(f"rec {tmp_path / 'rec.wav'}\n")
    (tmp_path / "segments").write_text("seg1 rec 1.0 1.5\n")
    (tmp_path / "utt2dur").write_text("seg1 0.5\n")
    (utt,) = read_data_dir(tmp_path)
    assert (utt.id, utt.start, utt.end, utt.duration) == ("seg1", 1.0, 1.5, 0.5)
    first = CropDataset([utt], spec=AudioSpec(sample_rate=rate, channels=1, channel_mode="first"), length=8000, seed=0)
    mixed = CropDataset([utt], spec=AudioSpec(sample_rate=rate, channels=1, channel_mode="mix"), length=8000, seed=0)
    x, y = first[(0, 0, 0, 0)]["audio"], mixed[(0, 0, 0, 0)]["audio"]
    assert torch.allclose(x, 2 * y, atol=1e-6)  # the mix halves a signal whose other channel is silent
    on_disk, _ = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert np.array_equal(x[0].numpy(), on_disk[rate : rate + 8000, 0])  # exactly the segment's samples
    long = CropDataset([utt], spec=AudioSpec(sample_rate=rate, channels=1), length=12000, seed=0)[(0, 0, 0, 0)]
    assert long["audio"].shape == (1, 12000) and float(long["audio"][0, 8000:].abs().max()) == 0.0  # padded


@pytest.mark.parametrize("kind", ["mpd", "msd", "msstft", "mrd"])
def test_one_generator_and_discriminator_step_per_critic(tmp_path, data_dir, kind):
    trainer = quiet_trainer(tiny_training_config(tmp_path, data_dir, f"discriminator.kinds=[{kind}]", valid=False))
    g_before = [p.detach().clone() for p in trainer.model.parameters()]
    d_before = [p.detach().clone() for p in trainer.disc.parameters()]
    metrics = trainer.train_step()
    trainer.close()
    assert metrics is not None and trainer.step == 1
    for key in ("mel", "commitment", "adversarial", "feature_matching", "discriminator", "grad_norm_g", "grad_norm_d"):
        assert math.isfinite(metrics[key]), key
    assert metrics["discriminator"] > 0 and metrics["mel"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(g_before, trainer.model.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, trainer.disc.parameters(), strict=True))


@pytest.mark.parametrize(
    "overrides",
    [
        ("loss.balancer=true", "loss.waveform_weight=1.0"),
        ("train.precision=bf16", "train.grad_accum=2", "train.ema_decay=0.9"),
    ],
)
def test_balancer_precision_and_accumulation_steps_are_finite(tmp_path, data_dir, overrides):
    trainer = quiet_trainer(tiny_training_config(tmp_path, data_dir, *overrides, valid=False))
    metrics = trainer.train_step()
    trainer.close()
    assert metrics is not None and all(math.isfinite(v) for v in metrics.values())


def test_discriminator_waits_for_its_start_step(tmp_path, data_dir):
    trainer = quiet_trainer(tiny_training_config(tmp_path, data_dir, "train.disc_start_step=1", valid=False))
    first, second = trainer.train_step(), trainer.train_step()
    trainer.close()
    assert "adversarial" not in first and "discriminator" not in first
    assert "adversarial" in second and "discriminator" in second


def test_nan_steps_are_skipped_then_stop_with_a_checkpoint(tmp_path, data_dir, monkeypatch):
    trainer = quiet_trainer(tiny_training_config(tmp_path, data_dir, "train.max_bad_steps=3", valid=False))
    trainer.fit(max_steps=1)
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    monkeypatch.setattr(trainer.mel_loss, "forward", lambda y_hat, y: (y_hat * float("nan")).mean())
    with pytest.raises(CodecError, match="3 steps in a row had NaN/Inf.*checkpoint.*--resume"):
        trainer.fit(max_steps=5)
    trainer.close()
    assert trainer.step == 1 and trainer.bad_total == 3
    for k, v in trainer.model.state_dict().items():  # weights and codebook statistics untouched
        assert torch.equal(v, weights[k]), k
    saved = checkpoints.load(checkpoints.find(tmp_path / "exp"))
    assert saved["step"] == 1 and torch.equal(saved["generator"]["quantizer.codebooks"], weights["quantizer.codebooks"])


def test_out_of_memory_names_the_batch_size(tmp_path, data_dir, monkeypatch):
    trainer = quiet_trainer(tiny_training_config(tmp_path, data_dir, valid=False))

    def boom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "train_step", boom)
    with pytest.raises(CodecError, match="out of memory.*train.batch_size=4.*train.batch_size=2 train.grad_accum=2"):
        trainer.fit(max_steps=1)
    trainer.close()


def test_validation_reports_metrics(tmp_path, data_dir):
    trainer = quiet_trainer(tiny_training_config(tmp_path, data_dir))
    trainer.fit(max_steps=2)
    metrics = trainer.run_validation()
    trainer.close()
    for key in ("valid/mel_distance@4", "valid/si_sdr@4", "valid/codebook_usage@1", "valid/codebook_perplexity@4"):
        assert math.isfinite(metrics[key]), key
    assert 0 < metrics["valid/codebook_usage@4"] <= 1
    assert (tmp_path / "exp" / "tensorboard").is_dir()


def test_validation_figures_are_codec_evals(tmp_path, data_dir):
    """Validation scores with codec.eval.metrics itself: the same clip through the model gives eval's numbers."""
    import numpy as np

    from codec.eval.metrics import score, select_metrics
    from codec.train.validation import VALID_METRICS, validate

    trainer = quiet_trainer(tiny_training_config(tmp_path, data_dir))
    model, items = trainer.model, trainer.valid_items[:1]
    metrics, outputs = validate(model, items, [2])
    trainer.close()
    reference = items[0][1].numpy().mean(0)
    expected, _ = score(
        reference, outputs[2][0].numpy().mean(0), model.sample_rate, select_metrics(list(VALID_METRICS))
    )
    assert expected and "si_sdr" in expected
    for column, value in expected.items():
        assert metrics[f"valid/{column}@2"] == value, column
    assert np.isfinite(metrics["valid/level_db@2"])


@pytest.mark.slow
def test_reconstruction_loss_falls(tmp_path):
    data = make_data_dir(tmp_path / "data", count=6, rate=8000, broken=False)
    config = tiny_training_config(
        tmp_path, data, "discriminator.kinds=[]", "train.lr=3e-3", "model.quantizer.dropout=0.0", valid=False
    )
    trainer = quiet_trainer(config)
    mel = []
    trainer.fit(max_steps=100, callback=lambda step, m: mel.append(m["mel"]))
    trainer.close()
    first, last = np.mean(mel[:10]), np.mean(mel[-10:])
    assert last < 0.6 * first, (first, last)


def test_quantizer_stays_in_fp32_under_autocast():
    torch.manual_seed(0)
    quantizer = GroupResidualVQ(dim=128, num_groups=2, num_levels=4, codebook_size=256, kmeans_iters=2)
    z = torch.randn(4, 128, 100)
    quantizer(z)  # k-means initialisation
    quantizer.eval()
    z = z.bfloat16()  # what an encoder under autocast hands over
    reference = quantizer(z.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = quantizer(z)
    assert torch.equal(mixed.codes, reference.codes)  # bf16 distances would pick other codewords
    assert mixed.quantized.dtype == torch.float32
