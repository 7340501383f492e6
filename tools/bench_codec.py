#!/usr/bin/env python
"""Benchmark a codec architecture on CPU: real-time factors and container overhead.

Prints one JSON line per figure. Timings are medians over repeats, measured in this one process;
compare ratios, not absolute numbers, across runs on shared machines.

    python tools/bench_codec.py --config grvq16k --threads 1 --seconds 10 --repeats 7
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from codec import bitstream
from codec.checkpoint import load_model
from codec.compress import encode_audio
from codec.config import builtin_config_path, load_config
from codec.models.codec import build_model


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


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="grvq16k", help="built-in config name or YAML path")
    parser.add_argument("--model", default=None, help="benchmark a model file instead of a random-init config")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        model = load_model(args.model)
    else:
        path = Path(args.config) if Path(args.config).is_file() else builtin_config_path(args.config)
        torch.manual_seed(0)
        model = build_model(load_config(path).model).eval()
    sr = model.sample_rate
    emit(
        what="model",
        name=model.name,
        parameters=model.num_parameters(),
        sample_rate=sr,
        hop_length=model.hop_length,
        groups=model.num_groups,
        levels=model.num_levels,
        codebook_size=model.codebook_size,
        bitrates_kbps=[b / 1000 for b in model.supported_bitrates()],
        cpu=cpu_name(),
        threads=args.threads,
        torch=torch.__version__,
    )
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((1, int(args.seconds * sr)))).astype(np.float32)
    x = torch.from_numpy(audio)[None]
    for levels in (1, model.num_levels):
        enc = median_time(lambda levels=levels: model.encode(x, levels), args.repeats)
        codes = model.encode(x, levels)
        dec = median_time(lambda codes=codes: model.decode(codes), args.repeats)
        emit(
            what="realtime_factor",
            levels=levels,
            kbps=model.bitrate(levels) / 1000,
            audio_seconds=args.seconds,
            encode_seconds=round(enc, 4),
            decode_seconds=round(dec, 4),
            encode_x_realtime=round(args.seconds / enc, 1),
            decode_x_realtime=round(args.seconds / dec, 1),
        )
    ten_s = audio[:, : 10 * sr] if audio.shape[1] >= 10 * sr else np.resize(audio, (1, 10 * sr))
    for levels in range(1, model.num_levels + 1):
        stream = io.BytesIO()
        header = encode_audio(model, ten_s, sr, stream, levels=levels)
        size = len(stream.getvalue())
        payload = (header.expected_frames * header.bits_per_frame + 7) // 8
        emit(
            what="container_overhead",
            audio_seconds=10,
            kbps=header.bitrate / 1000,
            file_bytes=size,
            payload_bytes=payload,
            overhead_bytes=size - payload,
            overhead_percent=round(100 * (size - payload) / payload, 2),
            packets=-(-header.expected_frames // bitstream.frames_per_packet(header)),
        )


if __name__ == "__main__":
    main()
