"""Model properties users rely on: level prefixes, causality, streaming equals offline, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codec.config import builtin_config_path, load_model_config
from codec.errors import CodecError
from codec.models.codec import build_model
from codec.quantization.grvq import rotation_trick
from tests.conftest import make_tiny, tone

HOP = 12  # tiny.yaml


PATCHED = {"encoder.patch_size": 3, "encoder.ratios": "[4]", "decoder.patch_size": 3, "decoder.ratios": "[4]"}


@pytest.fixture(scope="module", params=["plain", "patched"])
def tiny_model(request):
    """Every property below must hold for plain SEANet and for a patched model (3 samples folded per step)."""
    return make_tiny() if request.param == "plain" else make_tiny(**PATCHED)


def test_patched_model_folds_samples_into_channels():
    model = make_tiny(**PATCHED)
    assert model.hop_length == 12 and model.encoder.model[0].size == 3
    x = torch.randn(2, 1, 36)
    patches = model.encoder.model[0](x)
    assert patches.shape == (2, 3, 12) and torch.equal(patches[:, :, 1], x[:, 0, 3:6])
    assert torch.equal(model.decoder.model[-1](patches), x)  # Unpatchify inverts Patchify


def test_patch_and_ratios_must_give_one_hop():
    with pytest.raises(CodecError, match="same product"):
        make_tiny(**{"encoder.patch_size": 2})


def _audio(batch: int = 2, seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(tone(seconds, 8000, channels=batch, seed=seed))[:, None, :]


def test_level_prefix_property(tiny_model):
    x = _audio()
    full = tiny_model.encode(x)
    G = tiny_model.num_groups
    assert full.shape == (2, tiny_model.num_levels * G, -(-x.shape[-1] // HOP))
    for n in range(1, tiny_model.num_levels + 1):
        assert torch.equal(tiny_model.encode(x, levels=n), full[:, : n * G])


def test_decoding_a_prefix_matches_decoding_an_n_level_encode(tiny_model):
    x = _audio()
    full = tiny_model.encode(x)
    y = tiny_model.decode(full[:, :4])
    assert torch.allclose(y, tiny_model.decode(tiny_model.encode(x, levels=2)))


def test_appending_input_never_changes_earlier_codes(tiny_model):
    x = _audio(seconds=0.6)
    full = tiny_model.encode(x)
    for frames in [1, 5, 17, 33]:
        prefix = tiny_model.encode(x[..., : frames * HOP])
        assert torch.equal(prefix, full[..., :frames])
    # a partial last frame may change once it is completed, but no whole frame before it does
    partial = tiny_model.encode(x[..., : 10 * HOP + 5])
    assert torch.equal(partial[..., :10], full[..., :10])


def test_decoder_is_causal(tiny_model):
    codes = tiny_model.encode(_audio())
    y = tiny_model.decode(codes)
    assert torch.allclose(tiny_model.decode(codes[..., :7]), y[..., : 7 * HOP], atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 7, 13, HOP // 2, HOP + HOP // 2, 10_000])
def test_streaming_encode_equals_offline(tiny_model, chunk):
    x = _audio(batch=3, seconds=0.4)
    offline = tiny_model.encode(x)
    with tiny_model.streaming(3):
        parts = [tiny_model.encode(x[..., i : i + chunk]) for i in range(0, x.shape[-1], chunk)]
        parts.append(tiny_model.flush())
    assert torch.equal(torch.cat(parts, -1), offline)


@pytest.mark.parametrize("chunk", [1, 2, 5, 1000])
def test_streaming_decode_equals_offline(tiny_model, chunk):
    codes = tiny_model.encode(_audio(batch=2, seconds=0.4))
    offline = tiny_model.decode(codes)
    with tiny_model.streaming(2):
        audio = torch.cat([tiny_model.decode(codes[..., i : i + chunk]) for i in range(0, codes.shape[-1], chunk)], -1)
    assert torch.allclose(audio, offline, atol=1e-5)


def test_per_item_reset_starts_that_stream_afresh(tiny_model):
    a, b = _audio(batch=1, seed=1), _audio(batch=1, seed=2)
    with tiny_model.streaming(2):
        tiny_model.encode(torch.cat([a, a])[..., : 20 * HOP])
        tiny_model.reset_streaming(torch.tensor([False, True]))
        codes = tiny_model.encode(torch.cat([a[..., 20 * HOP : 320 * HOP], b[..., : 300 * HOP]]))
    assert torch.equal(codes[1:], tiny_model.encode(b[..., : 300 * HOP]))
    assert torch.equal(codes[:1], tiny_model.encode(a)[..., 20:320])


def test_streaming_state_is_plain_tensors_and_restorable(tiny_model):
    x = _audio(batch=1)
    with tiny_model.streaming(1):
        tiny_model.encode(x[..., :100])
        saved = tiny_model.get_streaming_state()
        first = tiny_model.encode(x[..., 100:])
        tiny_model.set_streaming_state(saved)
        again = tiny_model.encode(x[..., 100:])
    assert all(isinstance(v, torch.Tensor) for v in saved.values())
    assert torch.equal(first, again)


def test_factorized_codes_use_cosine_lookup_and_round_trip():
    model = make_tiny(**{"quantizer.factorized": "true", "quantizer.codebook_dim": 3})
    assert model.quantizer.lookup == "cosine" and model.quantizer.codebooks.shape[-1] == 3
    x = _audio()
    codes = model.encode(x)
    assert model.decode(codes).shape == (2, 1, codes.shape[-1] * HOP)


def test_training_forward_initialises_codebooks_and_passes_gradients():
    model = make_tiny().train()
    x = _audio(batch=4)
    y, q = model(x)
    assert bool(model.quantizer.initialized)
    assert y.shape == x.shape and torch.isfinite(q.commitment_loss)
    ((y - x) ** 2).mean().add(q.commitment_loss).backward()
    first = model.encoder.model[0].weight.v
    assert first.grad is not None and first.grad.abs().sum() > 0
    stats = model.quantizer.codebook_stats()
    assert stats["perplexity"].shape == (2, 4) and torch.all(stats["perplexity"] >= 1)


def test_rotation_trick_keeps_the_codeword_and_rotates_the_gradient():
    torch.manual_seed(1)
    e = torch.randn(5, 3, 6, requires_grad=True)
    q = torch.randn(5, 3, 6)
    out = rotation_trick(e, q)
    assert torch.allclose(out, q, atol=1e-6)
    g = torch.randn_like(q)
    (out * g).sum().backward()
    for i in range(5):  # dL/de = lambda R^T g, R the rotation taking e's direction to q's, by explicit matrices
        for j in range(3):
            ev, qv = e[i, j].detach().double(), q[i, j].double()
            e_hat, q_hat = ev / ev.norm(), qv / qv.norm()
            r = (e_hat + q_hat) / (e_hat + q_hat).norm()
            R = torch.eye(6, dtype=torch.double) - 2 * torch.outer(r, r) + 2 * torch.outer(q_hat, e_hat)
            assert torch.allclose(R @ e_hat, q_hat, atol=1e-9)
            want = qv.norm() / ev.norm() * R.T @ g[i, j].double()
            assert torch.allclose(e.grad[i, j].double(), want, atol=1e-5)


def test_rotation_gradient_gives_the_same_forward_and_trains():
    straight = make_tiny().train()
    rotated = make_tiny(**{"quantizer.gradient": "rotation"}).train()
    rotated.load_state_dict(straight.state_dict())
    x = _audio(batch=4)
    torch.manual_seed(5)
    y_straight, _ = straight(x)
    torch.manual_seed(5)
    y_rotated, q = rotated(x)
    assert torch.allclose(y_straight, y_rotated, atol=1e-5)
    ((y_rotated - x) ** 2).mean().add(q.commitment_loss).backward()
    first = rotated.encoder.model[0].weight.v
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    with pytest.raises(CodecError, match="gradient"):
        make_tiny(**{"quantizer.gradient": "copy"})


def test_simvq_codebooks_learn_by_gradient_and_stay_in_sync():
    torch.manual_seed(0)
    model = make_tiny(**{"quantizer.codebook_update": "simvq", "quantizer.dropout": 0.0}).train()
    quantizer = model.quantizer
    x = _audio(batch=8)
    model(x)  # k-means: the centroids become the frozen basis, the transform starts at identity
    assert torch.equal(quantizer.basis, quantizer.codebooks)
    z = model.encoder(x).detach()
    with torch.no_grad():
        quantizer.basis.normal_(0, z.std().item())  # from a random basis, as in the paper: only the map can learn

    def error():
        with torch.no_grad():
            return ((quantizer.decode(quantizer.encode(z)) - z) ** 2).mean().item()

    before = error()
    optimizer = torch.optim.Adam([quantizer.transform], lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        quantizer(z).commitment_loss.backward()
        optimizer.step()
    assert quantizer.transform.grad.abs().sum() > 0
    assert error() < before  # encode/decode see the transform's latest value, not the last forward's
    books = torch.einsum("glkd,glde->glke", quantizer.basis, quantizer.transform)
    assert torch.allclose(quantizer.codebooks, books)
    state = model.state_dict()
    assert torch.allclose(state["quantizer.codebooks"], books)
    clone = make_tiny(**{"quantizer.codebook_update": "simvq", "quantizer.dropout": 0.0})
    clone.load_state_dict(state)
    clone.eval()
    model.eval()
    assert torch.equal(clone.encode(x), model.encode(x))
    with pytest.raises(CodecError, match="codebook_update"):
        make_tiny(**{"quantizer.codebook_update": "adam"})


def test_quantizer_dropout_keeps_random_prefixes():
    model = make_tiny().train()
    torch.manual_seed(3)
    _, q = model(_audio(batch=64, seconds=0.1))
    assert set(q.levels.tolist()) == {1, 2, 3, 4}
    model.eval()
    _, q = model(_audio(batch=4, seconds=0.1))
    assert set(q.levels.tolist()) == {4}


def test_ema_moves_codebooks_towards_the_data():
    torch.manual_seed(0)
    model = make_tiny(**{"quantizer.dropout": 0.0}).train()
    x = _audio(batch=8)
    model(x)
    z = model.encoder(x)

    def error():
        q = model.quantizer.decode(model.quantizer.encode(z))
        return ((q - z) ** 2).mean().item()

    before = error()
    for _ in range(20):
        model(x)
    assert error() < before


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "codec" / "configs").glob("*.yaml")))
def test_every_shipped_config_builds(path):
    model = build_model(load_model_config(path))
    assert model.hop_length == model.config.hop_length
    assert model.supported_bitrates()[0] > 0


def test_bitrate_selection(tiny_model):
    rates = tiny_model.supported_bitrates()  # 8000/12 frames/s x 2 groups x 4 bits per level
    assert rates[0] == pytest.approx(8000 / 12 * 8)
    assert tiny_model.levels_for(bitrate_kbps=rates[1] / 1000) == (2, None)
    levels, notice = tiny_model.levels_for(bitrate_kbps=(rates[1] + rates[2]) / 2000)
    assert levels == 2 and "using" in notice
    with pytest.raises(CodecError, match="valid kbps"):
        tiny_model.levels_for(bitrate_kbps=rates[0] / 2000)
    with pytest.raises(CodecError, match="valid kbps"):
        tiny_model.levels_for(bitrate_kbps=rates[-1] * 2 / 1000)
    with pytest.raises(CodecError, match="levels 1..4"):
        tiny_model.levels_for(levels=5)


def test_config_is_strict_and_names_valid_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  encoder:\n    chanels: 3\n")
    with pytest.raises(CodecError, match=r"model\.encoder\.chanels.*valid keys.*channels"):
        load_model_config(bad)
    with pytest.raises(CodecError, match="must be int"):
        load_model_config(builtin_config_path("tiny"), ["model.latent_dim=eight"])
    with pytest.raises(CodecError, match="power of two"):
        load_model_config(builtin_config_path("tiny"), ["model.quantizer.codebook_size=10"])


def test_config_includes_and_overrides(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"include: {builtin_config_path('tiny')}\nmodel:\n  name: child\n")
    config = load_model_config(child, ["model.encoder.channels=6"])
    assert config.name == "child" and config.encoder.channels == 6
    assert config.sample_rate == 8000 and config.encoder.ratios == (3, 4)


def test_model_config_is_read_from_a_training_config():
    """`load_model_config` reads the model section of a training YAML (with its include) and ignores the rest."""
    from codec.train.config import load_config

    path = Path(__file__).parents[1] / "egs" / "folder" / "conf" / "grvq16k_cpu.yaml"
    config = load_model_config(path)
    assert config == load_config(path).model
    assert config.encoder.patch_size == 8 and config.quantizer.dropout == 0.5  # the include, then the file's own keys
    assert load_model_config(path, ["model.latent_dim=64", "train.lr=fast"]).latent_dim == 64  # train: not read
    with pytest.raises(CodecError, match=r"unknown config key 'model\.quantizer\.dropuot'.*dropout") as error:
        load_model_config(path, ["model.quantizer.dropuot=0.1"])
    assert "\n" not in str(error.value)


def test_lstm_trains_under_bf16_autocast_without_avx512():
    """oneDNN has no bf16 LSTM on CPUs without AVX-512: the LSTM must run in fp32 there (checked by capping the ISA)."""
    import os
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from codec.modules.conv import StreamingLSTM\n"
        "m = StreamingLSTM(16, num_layers=2)\n"
        "x = torch.randn(2, 16, 10, requires_grad=True)\n"
        "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    y = m(x.to(torch.bfloat16))\n"
        "assert y.dtype == torch.bfloat16, y.dtype\n"
        "y.float().sum().backward()\n"
        "assert torch.isfinite(x.grad).all()\n"
    )
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("chunk", [1, 5, 13, 1000])
def test_linear_skip_streams_exactly_like_offline_and_stays_causal(chunk):
    from codec.coding.streaming import StreamingDecoder, StreamingEncoder

    model = make_tiny(**{"encoder.linear_skip": "true", "decoder.linear_skip": "true"})
    assert model.encoder.skip is not None and model.decoder.skip is not None
    audio = tone(0.2, 8000, channels=1)
    x = torch.from_numpy(audio)[None]
    offline = model.encode(x, 3)
    encoder = StreamingEncoder(model, levels=3, batch_size=1, sample_rate=8000)
    parts = [encoder.push(audio[:, i : i + chunk]) for i in range(0, audio.shape[1], chunk)]
    assert torch.equal(torch.cat([*parts, encoder.flush()], -1), offline)
    decoder = StreamingDecoder(model, batch_size=1)
    streamed = np.concatenate(
        [decoder.push(offline[..., i : i + chunk]) for i in range(0, offline.shape[-1], chunk)], 1
    )
    assert np.abs(streamed - model.decode(offline)[:, 0].numpy()).max() < 1e-5
    # causal: changing the future leaves the output of the past frames untouched
    hop = model.hop_length
    y = torch.randn(1, 1, 8 * hop, requires_grad=True)
    out, _ = model(y, quantize=False)
    (grad,) = torch.autograd.grad(out[0, 0, : 4 * hop].sum(), y)
    assert grad[0, 0, 4 * hop :].abs().max() == 0
