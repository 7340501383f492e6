"""`codec bench`: speed figures as JSON lines (medians measured in one process; compare ratios).

Offline: encode/decode real-time factors and container overhead per bitrate.
Streaming (`--streaming`): per-frame compute time (median and p99) for encode and decode, against the
frame duration, plus the algorithmic latency.
ONNX (`--onnx`): torch eager against ONNX Runtime (the graphs of `codec export-onnx`), per frame and offline.
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

from codec.coding.compress import encode_audio
from codec.coding.streaming import StreamingDecoder, StreamingEncoder
from codec.format import bitstream
from codec.models.codec import CodecModel


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


def entropy_cost(model: CodecModel, tables, seconds: float = 10.0, repeats: int = 7) -> None:
    """The cost of entropy coding (codec/format/entropy.py) in file coding: `encode_audio` and `decode_stream` of the
    bundled speech clip (tiled to `seconds`, at the model's rate), plain against entropy coded, taking turns in one
    process (so that load on the machine falls on both alike); process-CPU medians, their ratio, and the bytes."""
    from codec.audio import read_audio
    from codec.coding.compress import decode_stream
    from codec.commands.demo import CLIP

    clip, rate = read_audio(CLIP)  # [C, T]: the clip is mono
    audio = np.resize(clip[:1], (1, int(seconds * rate))).astype(np.float32)
    for levels in range(1, model.num_levels + 1):
        files, times = {}, {}
        for kind in ("plain", "entropy"):
            out = io.BytesIO()
            encode_audio(model, audio, rate, out, levels=levels, tables=tables if kind == "entropy" else None)
            files[kind] = out.getvalue()
        for _ in range(repeats + 1):  # the first round warms up
            for kind in ("plain", "entropy"):
                chosen = tables if kind == "entropy" else None
                cpu = time.process_time()
                encode_audio(model, audio, rate, io.BytesIO(), levels=levels, tables=chosen)
                enc = time.process_time() - cpu
                cpu = time.process_time()
                decoded = decode_stream(model, io.BytesIO(files[kind]), tables=chosen)[0]
                dec = time.process_time() - cpu
                times.setdefault(kind, []).append((enc, dec))
                files.setdefault(kind + "_audio", decoded)
        med = {k: [statistics.median(t[i] for t in v[1:]) for i in (0, 1)] for k, v in times.items()}
        emit(what="entropy_cost", levels=levels, kbps=model.bitrate(levels) / 1000, audio_seconds=seconds,
             plain_bytes=len(files["plain"]), entropy_bytes=len(files["entropy"]),
             saving_percent=round(100 * (1 - len(files["entropy"]) / len(files["plain"])), 2),
             same_audio=bool(np.array_equal(files["plain_audio"], files["entropy_audio"])),
             encode_cpu_s=[round(med["plain"][0], 4), round(med["entropy"][0], 4)],
             decode_cpu_s=[round(med["plain"][1], 4), round(med["entropy"][1], 4)],
             encode_ratio=round(med["entropy"][0] / med["plain"][0], 3),
             decode_ratio=round(med["entropy"][1] / med["plain"][1], 3))  # fmt: skip


def streaming(model: CodecModel, frames: int = 500, batch_sizes: tuple[int, ...] = (1, 16)) -> None:
    """Per-frame compute time of the streaming encoder and decoder, one frame per call.

    Wall-clock median and p99 (what a real-time loop sees) and the median CPU time of this process (less
    sensitive to other load on a shared machine). With B > 1, B streams go through each call together and
    the per-stream figures divide by B.
    """
    hop = model.hop_length
    frame_ms = 1000 * hop / model.sample_rate
    delay_ms = 1000 * model.delay / model.sample_rate
    emit(what="algorithmic_latency", frame_ms=frame_ms, lookahead_ms=0.0, delay_ms=delay_ms,
         total_ms=frame_ms + delay_ms, note="causal model: a frame is coded once its last sample arrives; no "
         "lookahead; delay: the decoder's synthesis delay")  # fmt: skip
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


def _cpu_and_wall(fn, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of `fn()` over `repeats` calls (after one warm-up call)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def onnx_versus_torch(model: CodecModel, onnx_dir: str, frames: int = 500, seconds: float = 10.0) -> None:
    """Torch eager against ONNX Runtime (graphs of `codec export-onnx` in `onnx_dir`), one stream, one thread.

    Per frame: each runtime's streaming encoder and decoder (`StreamingEncoder` / `StreamingDecoder` against
    `OnnxEncoder` / `OnnxDecoder`), in two modes: `alone` (a process that only encodes, or only decodes: a live
    sender or receiver) and `duplex` (each frame encoded, then its codes decoded, the two models taking turns in
    the caches). Runtimes and modes take turns every 25 frames (the first two of each turn dropped: caches warm
    up), so load on the machine falls on all of them alike; wall-clock median and p99, and process-CPU median and
    p99 (what the code costs when other processes take the CPU away mid-frame). Offline: real-time factors of
    `model.encode` / `model.decode` (one whole-signal call) against the ONNX graphs called on blocks of
    `FILE_FRAMES_PER_CALL` frames, as `codec encode` / `decode` call them. At 1 level and at all levels; the ONNX
    encoder for fewer levels than `onnx_dir` searches is exported beside it with `-l` (so that it does not search
    levels it drops).
    """
    from codec.runtimes.export_onnx import export_onnx
    from codec.runtimes.onnx_runtime import OnnxDecoder, OnnxEncoder, load_manifest
    from codec.runtimes.runtime import FILE_FRAMES_PER_CALL

    hop = model.hop_length
    frame_ms = 1000 * hop / model.sample_rate
    top = load_manifest(onnx_dir)["levels"]
    graphs = {"onnxruntime": {top: Path(onnx_dir)}}  # runtime -> levels -> folder
    if getattr(model.config, "family", None) == "spectral":  # int8 block weights (`--runtime onnx-int8`) beside
        graphs["onnxruntime-int8"] = {top: Path(onnx_dir) / "int8"}
        export_onnx(model, graphs["onnxruntime-int8"][top], levels=top, weights="int8")
    for levels in sorted({1, top} - {top}):
        for runtime, dirs in graphs.items():
            dirs[levels] = Path(onnx_dir) / f"levels-{levels}-{runtime}"
            export_onnx(model, dirs[levels], levels=levels, weights="int8" if runtime.endswith("int8") else "fp32")
    dirs = graphs["onnxruntime"]
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, hop * frames))).astype(np.float32)
    block = 25  # frames a runtime and mode runs in a row before the next takes over
    for levels in sorted(dirs):
        kbps = model.bitrate(levels) / 1000

        def pair(runtime: str, levels: int = levels) -> tuple:
            if runtime == "torch":
                return StreamingEncoder(model, levels=levels).push, StreamingDecoder(model).push
            return OnnxEncoder(graphs[runtime][levels]).push, OnnxDecoder(graphs[runtime][levels]).push

        runtimes = ("torch", *graphs)
        coders = {(runtime, mode): pair(runtime) for runtime in runtimes for mode in ("alone", "duplex")}
        codes_of = {}  # the codes each runtime's decoder alone is given, frame by frame
        for runtime in runtimes:
            encode = pair(runtime)[0]
            codes_of[runtime] = [encode(audio[:, i * hop : (i + 1) * hop]) for i in range(frames)]
        times: dict[tuple[str, str, str], tuple[list, list]] = {}
        for start in range(0, frames, block):
            for (runtime, mode), (encode, decode) in coders.items():
                directions = [("encode",), ("decode",)] if mode == "alone" else [("encode", "decode")]
                for together in directions:
                    for i in range(start, min(start + block, frames)):
                        x, warm = audio[:, i * hop : (i + 1) * hop], i - start >= 2  # drop the block's first two
                        for direction in together:
                            if direction == "decode" and mode == "alone":
                                x = codes_of[runtime][i]
                            wall, cpu = time.perf_counter(), time.process_time()
                            x = (encode if direction == "encode" else decode)(x)
                            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                            if warm:
                                got = times.setdefault((runtime, mode, direction), ([], []))
                                got[0].append(wall)
                                got[1].append(cpu)
        for (runtime, mode, direction), (wall_s, cpu_s) in times.items():
            ms, cpu_ms = np.array(wall_s) * 1000, np.array(cpu_s) * 1000
            emit(what="streaming_frame_time", runtime=runtime, direction=direction, mode=mode, levels=levels,
                 kbps=kbps, streams_per_call=1, frame_ms=frame_ms, median_ms=round(float(np.median(ms)), 3),
                 p99_ms=round(float(np.percentile(ms, 99)), 3), cpu_median_ms=round(float(np.median(cpu_ms)), 3),
                 cpu_p99_ms=round(float(np.percentile(cpu_ms, 99)), 3),
                 cpu_median_percent_of_frame=round(float(100 * np.median(cpu_ms) / frame_ms), 1))  # fmt: skip
    x = (0.1 * np.random.default_rng(1).standard_normal((1, int(seconds * model.sample_rate)))).astype(np.float32)
    x = x[:, : x.shape[-1] - x.shape[-1] % hop]
    audio_s = x.shape[-1] / model.sample_rate
    per_call = FILE_FRAMES_PER_CALL  # what `codec encode` / `decode` on the ONNX runtime call the graphs with
    for levels in sorted(dirs):
        codes = model.encode(torch.from_numpy(x)[None], levels)
        figures = {"torch": (partial(model.encode, torch.from_numpy(x)[None], levels), partial(model.decode, codes))}
        codes_of = {"torch": codes.numpy()}
        for runtime, folders in graphs.items():
            encoder = OnnxEncoder(folders[levels], frames_per_call=per_call)
            decoder = OnnxDecoder(folders[levels], frames_per_call=per_call)
            codes_of[runtime] = encoder.encode(x)
            figures[runtime] = (partial(encoder.encode, x), partial(decoder.decode, codes_of[runtime]))
        for runtime, (encode, decode) in figures.items():
            (enc, enc_cpu), (dec, dec_cpu) = _cpu_and_wall(encode, 3), _cpu_and_wall(decode, 3)
            emit(what="realtime_factor", runtime=runtime, levels=levels, kbps=model.bitrate(levels) / 1000,
                 frames_per_call="all" if runtime == "torch" else per_call,
                 audio_seconds=round(audio_s, 3), encode_seconds=round(enc, 4), decode_seconds=round(dec, 4),
                 encode_x_realtime=round(audio_s / enc, 1), decode_x_realtime=round(audio_s / dec, 1),
                 encode_cpu_x_realtime=round(audio_s / enc_cpu, 1), decode_cpu_x_realtime=round(audio_s / dec_cpu, 1),
                 frames_with_other_codes=None if runtime == "torch"
                 else int((codes_of[runtime] != codes_of["torch"]).any(1).sum()))  # fmt: skip


def process_costs(model: CodecModel, repeats: int = 3, stream_seconds: float = 60.0) -> None:
    """Whole-process CPU and wall time of the CLI on each runtime, `codec --threads 1 ...` in a fresh process:

    - cold start: `encode` of a 1 s clip (interpreter start, imports, model load, first calls, exit);
    - `stream-encode` of `stream_seconds` of audio piped in as WAV (start-up included).

    The ONNX graphs are exported beforehand into a temporary cache (`CODEC_CACHE_DIR`), as a user's first
    `--runtime onnx` run leaves them; runs alternate between the runtimes, so load on the machine falls on both.
    """
    import os
    import resource
    import subprocess
    import sys
    import tempfile

    import soundfile as sf

    from codec.checkpoint import save_model
    from codec.runtimes.runtime import export_to_cache

    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory(prefix="codec-bench-") as tmp:
        tmp = Path(tmp)
        model_file = tmp / "model.safetensors"
        save_model(model, model_file, {"recipe": "codec bench"})
        env = {**os.environ, "CODEC_CACHE_DIR": str(tmp / "cache")}
        export_to_cache(model, tmp / "cache")  # the saved file has these weights, so the same id and folder
        rate = model.sample_rate
        clip, long = tmp / "one_second.wav", tmp / "long.wav"
        sf.write(clip, 0.1 * rng.standard_normal(rate), rate, subtype="PCM_16")
        sf.write(long, 0.1 * rng.standard_normal(int(stream_seconds * rate)), rate, subtype="PCM_16")
        base = [sys.executable, "-m", "codec", "--threads", "1"]
        model_args = ["-m", str(model_file), "--runtime"]
        jobs = {  # what -> runtime -> (argv, stdin)
            "cold_start_encode_1s": lambda runtime: (
                [*base, "encode", str(clip), str(tmp / f"{runtime}.codes"), *model_args, runtime, "-q"],
                None,
            ),
            f"stream_encode_{stream_seconds:g}s": lambda runtime: (
                [*base, "stream-encode", *model_args, runtime],
                long.read_bytes(),
            ),
        }
        for what, job in jobs.items():
            figures: dict[str, tuple[list[float], list[float]]] = {"torch": ([], []), "onnx": ([], [])}
            for _ in range(repeats):
                for runtime in figures:
                    argv, stdin = job(runtime)
                    before, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                    done = subprocess.run(argv, input=stdin, capture_output=True, env=env)
                    wall = time.perf_counter() - wall
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    if done.returncode != 0:
                        raise RuntimeError(f"{what} ({runtime}) failed: {done.stderr.decode(errors='replace')}")
                    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                    figures[runtime][0].append(cpu)
                    figures[runtime][1].append(wall)
            for runtime, (cpu, wall) in figures.items():
                emit(what=what, runtime=runtime, runs=repeats, cpu_seconds=round(statistics.median(cpu), 3),
                     wall_seconds=round(statistics.median(wall), 3))  # fmt: skip
