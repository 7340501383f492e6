"""The frame batcher behind `codec serve` (codec/server/batching.py): many live streams share one model call per tick.

Streams join at different times, at different bitrates, sample rates and channel counts, pushing audio in random
chunk sizes (1 sample, odd sizes, many frames). Their codes must equal each stream coded alone frame by frame:
bitwise on ONNX Runtime, checked on a model whose codewords have twins 1e-7 apart (relative): rounding noise of
that size in the latent flips the codes of about a quarter of the frames, so a batch that changed any row's
arithmetic would show. On torch, equal but at near-ties (tests/near_ties.py).
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import torch

from codec.coding.streaming import StreamingDecoder, StreamingEncoder
from codec.quantization.search import TIE_RTOL
from codec.server.batching import FrameBatcher
from tests.conftest import make_tiny, start_server, tone
from tests.near_ties import parting_gaps
from tests.test_chunking import near_twins

# (levels, input sample rate, channels, start delay in ticks of the event loop)
STREAMS = [(3, 8000, 1, 0), (3, 8000, 1, 2), (2, 16000, 1, 5), (3, 8000, 2, 1), (1, 11025, 1, 9), (2, 8000, 1, 30)]
SIZES = [1, 2, 5, 7, 79, 80, 81, 163, 1001]


def _audio(i: int, rate: int, channels: int) -> np.ndarray:
    audio = tone(0.3 + 0.07 * i, rate, channels=channels, seed=i)
    audio[:, 500:900] *= 0.01  # a quiet stretch: small residuals
    return audio


async def _encode(batcher: FrameBatcher, i: int) -> torch.Tensor:
    levels, rate, channels, delay = STREAMS[i]
    for _ in range(delay):  # joins while the others are running
        await asyncio.sleep(0)
    audio, rng = _audio(i, rate, channels), np.random.default_rng(i)
    stream = batcher.encoder(levels=levels, rows=channels, sample_rate=rate)
    parts, start = [], 0
    while start < audio.shape[1]:
        size = int(rng.choice(SIZES))
        parts.append(await stream.push(audio[:, start : start + size]))
        start += size
    parts.append(await stream.flush())
    return torch.from_numpy(np.concatenate(parts, -1))  # the batcher's codes are numpy on either runtime


def _run_all(model) -> tuple[list[torch.Tensor], FrameBatcher]:
    batcher = FrameBatcher(model)

    async def main():
        try:
            return await asyncio.gather(*[_encode(batcher, i) for i in range(len(STREAMS))])
        finally:
            batcher.close()

    return asyncio.run(main()), batcher


def _alone(model, i: int) -> torch.Tensor:
    levels, rate, channels, _ = STREAMS[i]
    encoder = StreamingEncoder(model, levels=levels, batch_size=channels, sample_rate=rate)
    audio = _audio(i, rate, channels)
    frames = [encoder.push(audio[:, k : k + 1]) for k in range(audio.shape[1])]  # one frame per call, as live
    return torch.cat([torch.as_tensor(f) for f in [*frames, encoder.flush()]], -1)  # numpy on the ONNX path


@pytest.fixture(scope="module")
def twins():
    return near_twins(make_tiny(), 1e-7)


@pytest.fixture(scope="module")
def onnx_twins(twins, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    from codec.runtimes.runtime import OnnxCodec, export_to_cache

    return OnnxCodec(twins, export_to_cache(twins, tmp_path_factory.mktemp("cache")))


def test_onnx_batched_streams_give_bitwise_the_codes_of_each_stream_alone(onnx_twins):
    got, batcher = _run_all(onnx_twins)
    assert onnx_twins.manifest["batch"] == "any"
    assert batcher.rows_coded / batcher.ticks > 2, "the streams were not coded together"
    for i, codes in enumerate(got):
        assert torch.equal(codes, _alone(onnx_twins, i)), f"stream {i} {STREAMS[i]}"


def test_torch_batched_streams_give_the_offline_codes_but_at_near_ties(twins):
    got, batcher = _run_all(twins)
    assert batcher.rows_coded / batcher.ticks > 2
    for i, codes in enumerate(got):
        levels, rate, channels, _ = STREAMS[i]
        if rate != twins.sample_rate:  # the resampler's output is what the model saw; checked bitwise on ONNX
            assert codes.shape == _alone(twins, i).shape
            continue
        x = torch.from_numpy(_audio(i, rate, channels))[:, None]  # channels as batch items
        differ, frames, gap = parting_gaps(twins, x, codes, levels)
        assert gap <= TIE_RTOL, f"stream {i}: {differ} of {frames} frames part at a gap of {gap:.1e}, not a tie"


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_batched_decoding_matches_each_stream_alone(runtime, tiny_model, tmp_path):
    model = tiny_model
    if runtime == "onnx":
        pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
        pytest.importorskip("onnx", reason="the onnx extra is not installed")
        from codec.runtimes.runtime import OnnxCodec, export_to_cache

        model = OnnxCodec(tiny_model, export_to_cache(tiny_model, tmp_path))
    rng = np.random.default_rng(0)
    streams = [(1, 8000, 1), (3, 8000, 2), (2, 16000, 1)]  # levels, output rate, channels
    codes = [torch.from_numpy(rng.integers(0, model.codebook_size, (c, n * model.num_groups, 7 + 3 * i)))
             for i, (n, _, c) in enumerate(streams)]  # fmt: skip
    batcher = FrameBatcher(model)

    async def decode(i):
        _, rate, channels = streams[i]
        stream = batcher.decoder(rows=channels, sample_rate=rate)
        parts = [await stream.push(codes[i][..., f : f + 2].numpy()) for f in range(0, codes[i].shape[-1], 2)]
        return np.concatenate([*parts, stream.flush()], 1)

    async def main():
        try:
            return await asyncio.gather(*[decode(i) for i in range(len(streams))])
        finally:
            batcher.close()

    for i, audio in enumerate(asyncio.run(main())):
        decoder = StreamingDecoder(model, batch_size=streams[i][2], sample_rate=streams[i][1])
        frames = [decoder.push(codes[i][..., f : f + 1]) for f in range(codes[i].shape[-1])]
        alone = np.concatenate([*frames, decoder.flush()], 1)
        assert audio.shape == alone.shape
        assert np.abs(audio - alone).max() < 1e-5


def test_a_failing_tick_fails_its_streams_and_the_batcher_goes_on(tiny_model):
    batcher = FrameBatcher(tiny_model)

    async def main():
        try:
            bad = batcher.encoder(levels=1)
            bad.state.values = {}  # a broken stream (its layers have no state): its tick raises
            with pytest.raises(KeyError):
                await bad.push(np.zeros((1, tiny_model.hop_length), np.float32))
            good = batcher.encoder(levels=1)
            return await good.push(np.zeros((1, 3 * tiny_model.hop_length), np.float32))
        finally:
            batcher.close()

    assert asyncio.run(main()).shape[-1] == 3


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_server_sessions_at_once_get_the_codes_of_each_stream_alone(runtime, request):
    pytest.importorskip("websockets")
    from codec.format.bitstream import CodesReader
    from codec.server.serve import encode_remote

    model = request.getfixturevalue("twins" if runtime == "torch" else "onnx_twins")
    url = start_server(model)
    rate = model.sample_rate
    audios = [(np.round(tone(0.5, rate, seed=s) * 32768) / 32768).astype(np.float32) for s in range(4)]

    async def main():
        return await asyncio.gather(*[encode_remote(url, a, rate, levels=2 + s % 3, chunk_seconds=0.0137 * (s + 1))
                                      for s, a in enumerate(audios)])  # fmt: skip

    for s, data in enumerate(asyncio.run(main())):
        packets = CodesReader(io.BytesIO(data)).packets()
        codes = torch.from_numpy(np.concatenate([p.codes for p in packets])).permute(1, 2, 0)  # [C, N, F]
        if runtime == "onnx":
            encoder = StreamingEncoder(model, levels=2 + s % 3)
            alone = [encoder.push(audios[s][:, k : k + 1]) for k in range(audios[s].shape[1])]
            alone = torch.cat([torch.as_tensor(f) for f in [*alone, encoder.flush()]], -1)  # numpy on ONNX
            assert torch.equal(codes, alone), f"session {s}"
            continue
        differ, frames, gap = parting_gaps(model, torch.from_numpy(audios[s])[None], codes, 2 + s % 3)
        assert gap <= TIE_RTOL, f"session {s}: {differ} of {frames} frames part at a gap of {gap:.1e}, not a tie"


def test_graphs_without_a_batch_axis_are_called_once_per_stream(onnx_twins, tmp_path):
    """Graphs cached by an older codec (no batch axis, no "batch" in the manifest) still serve, one call per stream."""
    import json
    import shutil

    from codec.runtimes.runtime import OnnxCodec

    old = tmp_path / "old"
    shutil.copytree(onnx_twins.onnx_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["batch"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    model = OnnxCodec(onnx_twins.model, old)
    got, batcher = _run_all(model)
    assert not batcher.coder.batched
    for i, codes in enumerate(got):
        assert torch.equal(codes, _alone(onnx_twins, i)), f"stream {i} {STREAMS[i]}"


def test_warm_up_loads_the_one_frame_and_the_batched_graphs(onnx_twins):
    """A server's first ticks alone and in a batch pay no session loading (it happens before it listens)."""
    from codec.runtimes.runtime import OnnxCodec

    fresh = OnnxCodec(onnx_twins.model, onnx_twins.onnx_dir)  # no session loaded yet
    batcher = FrameBatcher(fresh)
    try:
        batcher.warm_up()
    finally:
        batcher.close()
    m = fresh.manifest
    assert set(fresh.sessions._made) == {
        m[side][key] for side in ("encoder", "decoder") for key in ("file", "frame_file")
    }
    assert batcher.ticks == batcher.rows_coded == 0
