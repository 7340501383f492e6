"""Decode speed of grvq16k with each decoder head (waveform, istft), side by side in one process, one thread.

Prints one JSON line per head and mode: the median seconds to decode `--seconds` of audio (offline, and
streaming one frame per call) or to run one training forward and backward on `--train_batch` x 1 s, the
real-time factor (audio seconds per compute second) and the decoder's parameters. Rounds alternate between
the heads so machine load hits both alike; weights are random (speed does not depend on them).
Both wall-clock and process CPU time are measured: on a machine shared with other jobs (and under `nice`)
wall time mostly measures waiting, while the CPU time of one thread is the compute.

    python tools/bench_decoder_heads.py [--config grvq16k] [--seconds 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from codec.config import builtin_config_path, load_model_config
from codec.models.codec import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="grvq16k")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stream_seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--istft_stage", type=int, default=None, help="override decoder.istft_stage")
    parser.add_argument("--train_batch", type=int, default=8, help="items of 1 s in the timed training step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = builtin_config_path(args.config)
    heads = {"waveform": []}
    heads["istft"] = ["model.decoder.head=istft"] + (
        [f"model.decoder.istft_stage={args.istft_stage}"] if args.istft_stage is not None else []
    )
    models = {}
    for head, overrides in heads.items():
        torch.manual_seed(0)
        models[head] = build_model(load_model_config(path, overrides)).eval()
    any_model = next(iter(models.values()))
    frames = int(args.seconds * any_model.frame_rate)
    stream_frames = int(args.stream_seconds * any_model.frame_rate)
    codes = torch.randint(0, any_model.codebook_size, (1, any_model.num_levels * any_model.num_groups, frames))

    def offline(model):
        model.decode(codes)

    def streaming(model):
        with model.streaming(1):
            for f in range(stream_frames):
                model.decode(codes[..., f : f + 1])

    batch = torch.randn(args.train_batch, 1, any_model.sample_rate) * 0.1

    def train_step(model):
        # the generator's forward and backward (quantizer bypassed, waveform L1): what the head changes in a step
        with torch.enable_grad():
            y, _ = model(batch, quantize=False)
            (y - batch).abs().mean().backward()
        model.zero_grad(set_to_none=True)

    modes = (("offline", offline), ("streaming", streaming), ("train_step", train_step))
    times = {(head, mode): [] for head in models for mode, _ in modes}
    cpu_times = {key: [] for key in times}
    with torch.no_grad():
        for model in models.values():  # warm-up
            for _, fn in modes:
                fn(model)
        for _ in range(args.repeats):
            for head, model in models.items():
                for mode, fn in modes:
                    start, cpu_start = time.perf_counter(), time.process_time()
                    fn(model)
                    times[head, mode].append(time.perf_counter() - start)
                    cpu_times[head, mode].append(time.process_time() - cpu_start)
    for (head, mode), values in times.items():
        model = models[head]
        audio = {"offline": frames / model.frame_rate, "streaming": stream_frames / model.frame_rate}.get(
            mode, float(args.train_batch)
        )
        median, cpu = statistics.median(values), statistics.median(cpu_times[head, mode])
        last = model.decoder.model[-1]
        print(
            json.dumps(
                {
                    "config": args.config,
                    "head": head,
                    "stft": {"hop": last.hop, "n_fft": last.n_fft} if head == "istft" else None,
                    "mode": mode,
                    "audio_s": audio,
                    "median_wall_s": round(median, 4),
                    "rtf_wall": round(audio / median, 1),
                    "median_cpu_s": round(cpu, 4),
                    "rtf_cpu": round(audio / cpu, 1),
                    "decoder_parameters": sum(p.numel() for p in model.decoder.parameters()),
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
