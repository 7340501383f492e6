"""`codec bench`: speed figures as JSON lines (medians measured in one process; compare ratios).

Offline: encode/decode real-time factors and container overhead per bitrate.
Streaming (`--streaming`): per-frame compute time (median and p99) for encode and decode, against the
frame duration, plus the algorithmic latency.
"""

from __future__ import annotations

import io
import json
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from codec import bitstream
from codec.compress import encode_audio
from codec.models.codec import CodecModel
from codec.streaming import StreamingDecoder, StreamingEncoder


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def describe(model: CodecModel) -> None:
    emit(
        what="model",
        name=model.name,
        parameters=model.num_parameters(),
        sample_rate=model.sample_rate,
        hop_length=model.hop_length,
        groups=model.num_groups,
        levels=model.num_levels,
        codebook_size=model.codebook_size,
        bitrates_kbps=[b / 1000 for b in model.supported_bitrates()],
        cpu=cpu_name(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )


def offline(model: CodecModel, seconds: float = 10.0, repeats: int = 7) -> None:
    sr = model.sample_rate
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, int(seconds * sr)))).astype(np.float32)
    x = torch.from_numpy(audio)[None].to(next(model.parameters()).device)
    for levels in sorted({1, model.num_levels}):
        enc = _median_time(lambda levels=levels: model.encode(x, levels), repeats)
        # the encoder over the whole signal in one call: faster, but its codes depend on chunking (docs/STREAMING.md)
        whole = _median_time(lambda levels=levels: _encode_whole(model, x, levels), repeats)
        codes = model.encode(x, levels)
        dec = _median_time(lambda codes=codes: model.decode(codes), repeats)
        emit(what="realtime_factor", levels=levels, kbps=model.bitrate(levels) / 1000, audio_seconds=seconds,
             encode_seconds=round(enc, 4), decode_seconds=round(dec, 4),
             encode_x_realtime=round(seconds / enc, 1), decode_x_realtime=round(seconds / dec, 1),
             whole_signal_encode_seconds=round(whole, 4), frame_by_frame_cost=round(enc / whole, 2))  # fmt: skip
    ten_s = np.resize(audio, (1, 10 * sr))
    for levels in range(1, model.num_levels + 1):
        stream = io.BytesIO()
        header = encode_audio(model, ten_s, sr, stream, levels=levels)
        size = len(stream.getvalue())
        payload = (header.expected_frames * header.bits_per_frame + 7) // 8
        emit(what="container_overhead", audio_seconds=10, kbps=header.bitrate / 1000, file_bytes=size,
             payload_bytes=payload, overhead_bytes=size - payload,
             overhead_percent=round(100 * (size - payload) / payload, 2),
             packets=-(-header.expected_frames // bitstream.frames_per_packet(header)))  # fmt: skip


def streaming(model: CodecModel, frames: int = 500, batch_sizes: tuple[int, ...] = (1, 16)) -> None:
    """Per-frame compute time of the streaming encoder and decoder, one frame per call.

    Wall-clock median and p99 (what a real-time loop sees) and the median CPU time of this process (less
    sensitive to other load on a shared machine). With B > 1, B streams go through each call together and
    the per-stream figures divide by B.
    """
    hop = model.hop_length
    frame_ms = 1000 * hop / model.sample_rate
    emit(what="algorithmic_latency", frame_ms=frame_ms, lookahead_ms=0.0, total_ms=frame_ms,
         note="causal model: a frame is coded once its last sample arrives; no lookahead")  # fmt: skip
    for B in batch_sizes:
        audio = (0.1 * np.random.default_rng(0).standard_normal((B, hop * frames))).astype(np.float32)
        for levels in sorted({1, model.num_levels}):
            encoder = StreamingEncoder(model, levels=levels, batch_size=B)
            decoder = StreamingDecoder(model, batch_size=B)
            times = {"encode": ([], []), "decode": ([], [])}
            for i in range(frames):
                wall, cpu = time.perf_counter(), time.process_time()
                codes = encoder.push(audio[:, i * hop : (i + 1) * hop])
                times["encode"][0].append(time.perf_counter() - wall)
                times["encode"][1].append(time.process_time() - cpu)
                wall, cpu = time.perf_counter(), time.process_time()
                decoder.push(codes)
                times["decode"][0].append(time.perf_counter() - wall)
                times["decode"][1].append(time.process_time() - cpu)
            for direction, (wall_s, cpu_s) in times.items():
                ms = np.array(wall_s[10:]) * 1000 / B
                cpu_ms = float(np.median(cpu_s[10:])) * 1000 / B
                emit(what="streaming_frame_time", direction=direction, levels=levels, streams_per_call=B,
                     frame_ms=frame_ms, median_ms=round(float(np.median(ms)), 3),
                     p99_ms=round(float(np.percentile(ms, 99)), 3), cpu_median_ms=round(cpu_ms, 3),
                     median_percent_of_frame=round(float(100 * np.median(ms) / frame_ms), 1),
                     p99_percent_of_frame=round(float(100 * np.percentile(ms, 99) / frame_ms), 1))  # fmt: skip


@torch.no_grad()
def _encode_whole(model: CodecModel, x: torch.Tensor, levels: int) -> torch.Tensor:
    """The encoder and search over all frames in one call (the path before codes were made chunking-independent)."""
    return model.quantizer.encode(model.encoder(model._pad_to_frames(x)), levels)


def onnx_versus_torch(model: CodecModel, onnx_dir: str, frames: int = 500, seconds: float = 10.0) -> None:
    """Torch eager against ONNX Runtime (graphs of `codec export-onnx`), one stream, interleaved per frame.

    Per-frame wall time (median, p99) of each runtime's encoder and decoder step, and offline real-time factors
    (torch: `model.encode` / `model.decode`; ONNX Runtime: the step graphs called frame after frame).
    """
    from codec.onnx_runtime import OnnxSide, pad_levels

    hop = model.hop_length
    frame_ms = 1000 * hop / model.sample_rate
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, hop * frames))).astype(np.float32)
    enc, dec = OnnxSide(onnx_dir, "encoder"), OnnxSide(onnx_dir, "decoder")
    manifest = enc.manifest
    G = model.num_groups
    for levels in sorted({1, manifest["levels"]}):
        encoder, decoder = StreamingEncoder(model, levels=levels), StreamingDecoder(model)
        enc.reset(), dec.reset()
        times = {(r, d): [] for r in ("torch", "onnxruntime") for d in ("encode", "decode")}
        for i in range(frames):
            frame = audio[:, i * hop : (i + 1) * hop]
            start = time.perf_counter()
            codes = encoder.push(frame)
            times["torch", "encode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            decoder.push(codes)
            times["torch", "decode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            onnx_codes = enc.step(frame[None])[:, : levels * G]
            times["onnxruntime", "encode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            dec.step(pad_levels(onnx_codes, manifest))
            times["onnxruntime", "decode"].append(time.perf_counter() - start)
        for (runtime, direction), wall in times.items():
            ms = np.array(wall[10:]) * 1000
            emit(what="streaming_frame_time", runtime=runtime, direction=direction, levels=levels,
                 kbps=model.bitrate(levels) / 1000, streams_per_call=1, frame_ms=frame_ms,
                 median_ms=round(float(np.median(ms)), 3), p99_ms=round(float(np.percentile(ms, 99)), 3),
                 median_percent_of_frame=round(float(100 * np.median(ms) / frame_ms), 1),
                 p99_percent_of_frame=round(float(100 * np.percentile(ms, 99) / frame_ms), 1))  # fmt: skip
    x = (0.1 * np.random.default_rng(1).standard_normal((1, 1, int(seconds * model.sample_rate)))).astype(np.float32)
    x = np.pad(x, ((0, 0), (0, 0), (0, -x.shape[-1] % hop)))
    n = x.shape[-1] // hop

    def onnx_encode():
        enc.reset()
        return np.concatenate([enc.step(x[..., i * hop : (i + 1) * hop]) for i in range(n)], -1)

    def onnx_decode(codes):
        dec.reset()
        return np.concatenate([dec.step(pad_levels(codes[..., i : i + 1], manifest)) for i in range(n)], -1)

    for levels in sorted({1, manifest["levels"]}):
        codes = model.encode(torch.from_numpy(x), levels)
        onnx_codes = onnx_encode()[:, : levels * G]
        same = bool(np.array_equal(onnx_codes, codes.numpy()))
        figures = {
            "torch": (partial(model.encode, torch.from_numpy(x), levels), partial(model.decode, codes)),
            "onnxruntime": (onnx_encode, partial(onnx_decode, onnx_codes)),
        }
        for runtime, (encode, decode) in figures.items():
            e, d = _median_time(encode, 3), _median_time(decode, 3)
            audio_s = n * hop / model.sample_rate
            emit(what="realtime_factor", runtime=runtime, levels=levels, kbps=model.bitrate(levels) / 1000,
                 audio_seconds=round(audio_s, 3), encode_seconds=round(e, 4), decode_seconds=round(d, 4),
                 encode_x_realtime=round(audio_s / e, 1), decode_x_realtime=round(audio_s / d, 1),
                 codes_equal_torch=same if runtime == "onnxruntime" else None)  # fmt: skip
