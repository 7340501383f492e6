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
        codes = model.encode(x, levels)
        dec = _median_time(lambda codes=codes: model.decode(codes), repeats)
        emit(what="realtime_factor", levels=levels, kbps=model.bitrate(levels) / 1000, audio_seconds=seconds,
             encode_seconds=round(enc, 4), decode_seconds=round(dec, 4),
             encode_x_realtime=round(seconds / enc, 1), decode_x_realtime=round(seconds / dec, 1))  # fmt: skip
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
