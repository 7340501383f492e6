"""How much codes depend on how a stream's audio is chunked (docs/STREAMING.md, "Streaming and offline codes").

Torch: a chunk is coded in one call, so a frame's latent differs in its last bits with the chunking; the codes
equal offline encoding's except where that flips a near-tie of the residual search. ONNX Runtime: the encoder
graph codes one frame per call on same-shaped arrays, so its codes are bitwise the same for every chunking.

The models here have near-twin codewords (each codeword's twin differs by about 1e-6 relative), so nearly every
frame sits on a near-tie: the strongest case for both statements.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.audio import resample
from codec.coding.streaming import StreamingEncoder
from codec.quantization.search import TIE_RTOL
from tests.conftest import make_tiny, tone
from tests.near_ties import ONNX_TIE_RTOL, parting_gaps


def near_twins(model, nudge: float = 1e-6):
    """Make codewords K/2..K-1 of every codebook copies of 0..K/2-1, nudged by `nudge` relative."""
    books = model.quantizer.codebooks
    half = books.shape[2] // 2
    with torch.no_grad():
        books[:, :, half:] = books[:, :, :half] * (1 + nudge)
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


def _audio(model, seed: int) -> np.ndarray:
    audio = tone(0.6, model.sample_rate, seed=seed)
    audio[:, 1000:1400] *= 0.01  # a quiet stretch: small residuals
    return audio


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_random_chunking_gives_offline_codes_but_at_near_ties(model, seed):
    audio = _audio(model, seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(audio)[None]
    for levels in range(1, model.num_levels + 1):
        encoder = StreamingEncoder(model, levels=levels)
        parts, start = [], 0
        for size in _chunks(rng, audio.shape[1], model.hop_length):
            parts.append(encoder.push(audio[:, start : start + size]))
            start += size
        parts.append(encoder.flush())
        differ, frames, gap = parting_gaps(model, x, torch.cat(parts, -1), levels)
        assert gap <= TIE_RTOL, f"levels={levels}: {differ} of {frames} frames part at a gap of {gap:.1e}, not a tie"


@pytest.fixture(scope="module")
def onnx_dir(model, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    from codec.runtimes.export_onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx")
    export_onnx(model, out)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_onnx_codes_do_not_depend_on_chunking(model, onnx_dir, seed):
    """Random chunk sizes (1 sample, odd, around a frame, many frames) give the whole signal's codes, bit for bit,
    at every level count; and they are torch's codes but at near-ties."""
    from codec.runtimes.onnx_runtime import OnnxEncoder

    audio = _audio(model, seed)
    rng = np.random.default_rng(seed)
    encoder = OnnxEncoder(onnx_dir)
    offline = encoder.encode(audio)
    for levels in range(1, model.num_levels + 1):
        encoder = OnnxEncoder(onnx_dir, levels=levels)
        for _ in range(2):  # two chunkings
            parts, start = [], 0
            for size in _chunks(rng, audio.shape[1], model.hop_length):
                parts.append(encoder.push(audio[:, start : start + size]))
                start += size
            parts.append(encoder.flush())
            assert np.array_equal(np.concatenate(parts, -1), offline[:, : levels * model.num_groups]), levels
            encoder.reset()
    differ, frames, gap = parting_gaps(model, torch.from_numpy(audio)[None], offline)
    assert gap <= ONNX_TIE_RTOL, f"{differ} of {frames} frames part from torch's at a gap of {gap:.1e}, not a tie"


DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"


@pytest.mark.slow
@pytest.mark.skipif(not DEV.is_dir(), reason=f"{DEV} (real recordings) is not on this machine")
@pytest.mark.parametrize("name", ["spectral16k", "grvq16k"])
def test_real_recordings_chunking(tmp_path, name):
    """Each shipped model on real speech: torch streaming in 1-sample, odd and 20 ms chunks gives `model.encode`'s
    codes but at near-ties; the ONNX encoder gives the same codes for every chunking."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from codec.checkpoint import load_model
    from codec.runtimes.export_onnx import export_onnx
    from codec.runtimes.onnx_runtime import OnnxEncoder

    model = load_model(name)
    export_onnx(model, tmp_path)
    files = sorted(p for p in DEV.rglob("*") if p.suffix.lower() in (".wav", ".flac"))[: int(os.environ.get("N", 3))]
    if not files:
        pytest.skip(f"no wav or flac files under {DEV}")
    for path in files:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = resample(audio.T[:1, : 10 * rate], rate, model.sample_rate)
        x = torch.from_numpy(audio)[None]
        onnx = OnnxEncoder(tmp_path)
        onnx_offline = onnx.encode(audio)
        for chunk in (1, 333, 320):
            part = audio[:, :16000] if chunk == 1 else audio  # a second of single samples is enough (and slow)
            encoder = StreamingEncoder(model)
            got = torch.cat([*(encoder.push(part[:, i : i + chunk]) for i in range(0, part.shape[1], chunk)),
                             encoder.flush()], -1)  # fmt: skip
            _, _, gap = parting_gaps(model, torch.from_numpy(part)[None], got)
            assert gap <= TIE_RTOL, f"{path.name} chunk={chunk}: a gap of {gap:.1e} is not a tie"
            got = np.concatenate([*(onnx.push(part[:, i : i + chunk]) for i in range(0, part.shape[1], chunk)),
                                  onnx.flush()], -1)  # fmt: skip
            onnx.reset()
            assert np.array_equal(got, onnx_offline[..., : got.shape[-1]]), f"{path.name} chunk={chunk} (ONNX)"
        _, _, gap = parting_gaps(model, x, onnx_offline)
        assert gap <= ONNX_TIE_RTOL, f"{path.name}: ONNX codes part from torch's at a gap of {gap:.1e}, not a tie"
