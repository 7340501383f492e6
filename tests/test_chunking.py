"""Codes do not depend on how a stream's audio is chunked: bit-identical to offline encoding, every level count.

The models here have near-twin codewords (each codeword's twin differs by a few fp32 ulps), so nearly every frame
sits on a near-tie that float noise of the size chunk-dependent arithmetic makes would flip; equality then holds
only if each frame's latent is bitwise the same however the audio arrived.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.audio import resample
from codec.streaming import StreamingEncoder
from tests.conftest import make_tiny, tone


def near_twins(model):
    """Make codewords K/2..K-1 of every codebook copies of 0..K/2-1, nudged by about 1e-6 relative."""
    books = model.quantizer.codebooks
    half = books.shape[2] // 2
    with torch.no_grad():
        books[:, :, half:] = books[:, :, :half] * (1 + 1e-6)
    return model


@pytest.fixture(scope="module", params=["tiny", "patched"])
def model(request):
    if request.param == "tiny":  # LSTM, no patching
        return near_twins(make_tiny())
    return near_twins(make_tiny(**{"encoder.patch_size": 2, "encoder.linear_skip": "true", "encoder.lstm_layers": 0,
                                   "decoder.patch_size": 2, "decoder.linear_skip": "true"}))  # fmt: skip


def _chunks(rng, total: int, hop: int) -> list[int]:
    sizes = [1, 2, 3, 5, 7, hop - 1, hop, hop + 1, 2 * hop + 3, 97, 1001]
    out = []
    while sum(out) < total:
        out.append(int(rng.choice(sizes)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_chunking_gives_offline_codes_at_every_level_count(model, seed):
    audio = tone(0.6, model.sample_rate, seed=seed)
    audio[:, 1000:1400] *= 0.01  # a quiet stretch: small residuals
    rng = np.random.default_rng(seed)
    offline = model.encode(torch.from_numpy(audio)[None])  # all levels
    for levels in range(1, model.num_levels + 1):
        encoder = StreamingEncoder(model, levels=levels)
        parts, start = [], 0
        for size in _chunks(rng, audio.shape[1], model.hop_length):
            parts.append(encoder.push(audio[:, start : start + size]))
            start += size
        parts.append(encoder.flush())
        streamed = torch.cat(parts, -1)
        assert torch.equal(streamed, offline[:, : levels * model.num_groups]), f"levels={levels}"


def test_offline_codes_of_a_file_do_not_depend_on_its_length(model):
    """A prefix of the audio codes to a prefix of the codes (the frames it completes)."""
    audio = torch.from_numpy(tone(0.5, model.sample_rate))[None]
    hop = model.hop_length
    whole = model.encode(audio)
    for frames in (1, 2, 7, 30):
        assert torch.equal(model.encode(audio[..., : frames * hop]), whole[..., :frames])


DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"


@pytest.mark.slow
@pytest.mark.skipif(not DEV.is_dir(), reason=f"{DEV} (real recordings) is not on this machine")
def test_real_recordings_stream_to_offline_codes():
    """The shipped model on real speech: 1-sample, odd and 20 ms chunks give `model.encode`'s codes."""
    from codec.checkpoint import load_model

    model = load_model("grvq16k")
    files = sorted(p for p in DEV.rglob("*") if p.suffix.lower() in (".wav", ".flac"))[: int(os.environ.get("N", 3))]
    if not files:
        pytest.skip(f"no wav or flac files under {DEV}")
    for path in files:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = resample(audio.T[:1, : 10 * rate], rate, model.sample_rate)
        offline = model.encode(torch.from_numpy(audio)[None])
        for chunk in (1, 333, 320):
            if chunk == 1 and audio.shape[1] > 16000:
                part = audio[:, :16000]  # a second of single samples is enough (and slow)
                encoder = StreamingEncoder(model)
                got = torch.cat([encoder.push(part[:, i : i + 1]) for i in range(part.shape[1])], -1)
                assert torch.equal(got, offline[..., : got.shape[-1]]), f"{path.name} chunk={chunk}"
                continue
            encoder = StreamingEncoder(model)
            parts = [encoder.push(audio[:, i : i + chunk]) for i in range(0, audio.shape[1], chunk)]
            got = torch.cat([*parts, encoder.flush()], -1)
            assert torch.equal(got, offline), f"{path.name} chunk={chunk}"
