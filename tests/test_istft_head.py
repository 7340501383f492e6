"""The causal inverse-STFT decoder head (decoder.head: istft): exact maths, shapes, streaming, causality, training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from codec.config import ModelConfig, builtin_config_path, from_dict, load_model_config
from codec.models.codec import build_model
from codec.modules.istft import ISTFTHead, hann_window
from codec.modules.seanet import Unpatchify
from tests.conftest import make_tiny, tone

# the istft head is a waveform-family (SEANet) decoder option; the spectral family has its own synthesis
CONFIGS = [
    p
    for p in sorted((Path(__file__).parents[1] / "codec" / "configs").glob("*.yaml"))
    if load_model_config(p).family == "seanet"
]
PATCHED = {"encoder.patch_size": 3, "encoder.ratios": "[4]", "decoder.patch_size": 3, "decoder.ratios": "[4]"}
# (overrides, hop at the head): tiny is 8 kHz, ratios [3, 4] run reversed in the decoder (x4, then x3)
VARIANTS = {
    "stage0": ({"decoder.istft_stage": 0}, 12),
    "stage1": ({}, 3),
    "stage2": ({"decoder.istft_stage": 2}, 1),
    "stage1_nfft": ({"decoder.istft_n_fft": 18}, 3),
    "patched_stage1": (PATCHED, 3),
    "patched_stage0_skip": ({**PATCHED, "decoder.istft_stage": 0, "decoder.linear_skip": "true"}, 12),
}


def make_istft(**overrides) -> nn.Module:
    return make_tiny(**{"decoder.head": "istft", **overrides})


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    overrides, hop = VARIANTS[request.param]
    return make_istft(**overrides), hop


def test_head_turns_the_spectra_of_causal_frames_back_into_the_signal():
    """Fed log|X| and angle(X) of Hann-windowed frames [j * hop, j * hop + n_fft), the head returns the signal,
    once the first n_fft - hop samples (fewer overlapping frames) are past, in any chunking."""
    hop, n_fft = 8, 32
    head = ISTFTHead(1, audio_channels=1, hop=hop, n_fft=n_fft)
    head.proj = nn.Identity()  # drive the inverse DFT and overlap-add directly
    torch.manual_seed(0)
    x = 0.1 * torch.randn(1, 800, dtype=torch.float64)
    X = torch.fft.rfft(x.unfold(-1, n_fft, hop) * hann_window(n_fft), dim=-1)  # [1, F, K]
    features = torch.cat([X.abs().log(), X.angle()], -1).transpose(1, 2).float()  # [1, 2K, F]
    frames = features.shape[-1]
    y = head(features)
    assert y.shape == (1, 1, frames * hop)
    steady = slice(n_fft - hop, frames * hop)
    assert (y[0, 0, steady].double() - x[0, steady]).abs().max() < 1e-5
    with head.streaming(1):
        streamed = torch.cat([head(features[..., i : i + 3]) for i in range(0, frames, 3)], -1)
    assert torch.allclose(streamed, y, atol=1e-6)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_takes_the_istft_head(path):
    """Every stage of every shipped config builds, keeps the model's hop and emits hop_length samples per frame."""
    base = load_model_config(path)
    for stage in range(len(base.decoder.ratios) + 1):
        config = load_model_config(path, ["model.decoder.head=istft", f"model.decoder.istft_stage={stage}"])
        dec = config.decoder
        assert dec.istft_hop * _upsampling_before(dec.ratios, stage) == config.hop_length
        if path.stem != "tiny" and stage != dec.istft_stage:
            continue  # building every stage of the big models adds seconds and no new arithmetic
        model = build_model(config).eval()
        head = model.decoder.model[-1]
        assert isinstance(head, ISTFTHead) and head.hop == dec.istft_hop and head.n_fft == 4 * dec.istft_hop
        assert model.hop_length == base.hop_length and model.frame_rate == model.sample_rate / base.hop_length
        with torch.no_grad():
            y = model.decoder(torch.randn(1, config.latent_dim, 3))
        assert y.shape == (1, config.channels, 3 * config.hop_length) and torch.isfinite(y).all()


def _upsampling_before(ratios: tuple[int, ...], stage: int) -> int:
    out = 1
    for r in list(reversed(ratios))[:stage]:
        out *= r
    return out


def test_default_head_is_unchanged():
    """A config without the key (every existing config and model file) builds the waveform head as before."""
    side = {"channels": 4, "ratios": [3, 4], "patch_size": 2}
    config = from_dict(ModelConfig, {"name": "old", "latent_dim": 8, "encoder": side, "decoder": side})
    assert config.decoder.head == "waveform"
    model = build_model(config)
    assert isinstance(model.decoder.model[-1], Unpatchify)
    assert not any(isinstance(m, ISTFTHead) for m in model.modules())
    plain, explicit = make_tiny(), make_tiny(**{"decoder.head": "waveform", "decoder.istft_stage": 0})
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(plain.state_dict()[k], explicit.state_dict()[k]) for k in plain.state_dict())


def test_head_settings_are_checked():
    tiny = builtin_config_path("tiny")
    with pytest.raises(Exception, match="choose one of"):
        load_model_config(tiny, ["model.decoder.head=stft"])
    with pytest.raises(Exception, match="istft_stage 3 must lie in 0..2"):
        load_model_config(tiny, ["model.decoder.head=istft", "model.decoder.istft_stage=3"])
    with pytest.raises(Exception, match="istft_n_fft 10 must be even, a multiple"):
        load_model_config(tiny, ["model.decoder.head=istft", "model.decoder.istft_n_fft=10"])
    with pytest.raises(Exception, match="decoder setting"):
        load_model_config(tiny, ["model.encoder.head=istft"])


def _codes(model, batch=2, seconds=0.4):
    x = torch.from_numpy(tone(seconds, 8000, channels=batch))[:, None, :]
    return model.encode(x)


@pytest.mark.parametrize("chunk", [1, 2, 5, 1000])
def test_streaming_decode_equals_offline(variant, chunk):
    model, _ = variant
    codes = _codes(model)
    offline = model.decode(codes)
    assert offline.shape == (2, 1, codes.shape[-1] * model.hop_length)
    with model.streaming(2):
        parts = [model.decode(codes[..., i : i + chunk]) for i in range(0, codes.shape[-1], chunk)]
    assert all(p.shape[-1] == min(chunk, codes.shape[-1] - i * chunk) * model.hop_length for i, p in enumerate(parts))
    assert torch.allclose(torch.cat(parts, -1), offline, atol=1e-5)


def test_decoder_is_causal(variant):
    """Changing future latents never changes earlier output samples (exactly), nor their gradients."""
    model, _ = variant
    hop = model.hop_length
    torch.manual_seed(1)
    z = torch.randn(1, 8, 20)
    with torch.no_grad():
        y = model.decoder(z)
        for k in (1, 7, 19):
            changed = z.clone()
            changed[..., k:] = torch.randn_like(changed[..., k:]) * 3
            assert torch.equal(model.decoder(changed)[..., : k * hop], y[..., : k * hop])
    z.requires_grad_(True)
    (grad,) = torch.autograd.grad(model.decoder(z)[..., : 6 * hop].sum(), z)
    assert grad[..., 6:].abs().max() == 0 and grad[..., :6].abs().max() > 0


def test_istft_model_trains():
    """A few optimizer steps on the tiny istft model reduce a log-spectral + waveform L1 loss."""
    torch.manual_seed(0)
    model = make_istft(**{"decoder.linear_skip": "true"}).train()
    x = torch.from_numpy(tone(0.3, 8000, channels=4, seed=3))[:, None, :]
    window = torch.hann_window(64)

    def loss_fn():
        y, _ = model(x, quantize=False)
        spec = [torch.stft(s[:, 0], 64, 16, window=window, return_complex=True).abs() for s in (x, y)]
        return (spec[0].clamp_min(1e-5).log() - spec[1].clamp_min(1e-5).log()).abs().mean() + (x - y).abs().mean()

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = loss_fn().item()
    for _ in range(25):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head = model.decoder.model[-1]
    assert head.proj.weight.v.grad.abs().sum() > 0
    with torch.no_grad():
        after = loss_fn().item()
    assert after < 0.8 * before, (before, after)
