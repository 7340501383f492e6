#!/usr/bin/env python
"""Do live codes equal file codes on real recordings? One JSON line per clip and path, then a summary line.

For each clip (a real recording, e.g. under ../shared/data/dev/speech) and runtime, the reference is the live
path frame by frame (`StreamingEncoder` pushed one frame at a time, all levels). Compared with it:
  - `file`: `codec encode` of the whole file (torch: 2 s blocks; ONNX: blocks of 100 frames);
  - `chunks`: `StreamingEncoder` pushed in random chunk sizes (1 sample, odd sizes, a frame +- 1, a second);
  - `pipe`: `codec stream-encode` reading the WAV from a pipe, written to it in random-sized pieces;
  - `server`: `codec serve` with every clip sent at once by concurrent sessions in odd-sized messages (the
    server's batched frame calls).
Each line counts the frames whose codes differ and the first level where they part. The ONNX live paths
(chunks, pipe, server) must be bitwise equal to the reference; torch's, and ONNX's file path, equal except at
near-ties of the search (docs/STREAMING.md).

    python tools/check_streaming_codes.py --data ../shared/data/dev/speech --clips 8 --runtimes torch,onnx
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from codec import load_model
from codec.audio import read_audio, resample
from codec.cli import NO_DEFAULT
from codec.coding.compress import encode_audio
from codec.coding.streaming import StreamingEncoder
from codec.format.bitstream import CodesReader
from codec.modelfile import default_model_name
from codec.runtimes.runtime import with_runtime


def codes_of(data: bytes) -> np.ndarray:
    """[C, codebooks, frames] of a .codes file."""
    return np.concatenate([p.codes for p in CodesReader(io.BytesIO(data)).packets()]).transpose(1, 2, 0)


def compare(ref: np.ndarray, got: np.ndarray, groups: int) -> dict:
    if got.shape != ref.shape:
        return {"shape": list(got.shape), "expected_shape": list(ref.shape)}
    differ = (got != ref).any(axis=(0, 1))
    first = np.argmax((got != ref).any(0), axis=0)[differ] // groups + 1  # first differing level per frame
    return {"frames": int(ref.shape[-1]), "frames_differ": int(differ.sum()),
            "first_level": sorted({int(x) for x in first})}  # fmt: skip


def random_chunks(total: int, hop: int, rng: random.Random) -> list[int]:
    sizes = [1, 3, 7, hop - 1, hop, hop + 1, 2 * hop + 5, 999, 16000]
    out: list[int] = []
    while sum(out) < total:
        out.append(rng.choice(sizes))
    return out


def live_codes(model, audio: np.ndarray, sizes: list[int]) -> np.ndarray:
    encoder = StreamingEncoder(model, batch_size=audio.shape[0])
    parts, start = [], 0
    for size in sizes:
        parts.append(encoder.push(audio[:, start : start + size]))
        start += size
    return np.concatenate([np.asarray(p) for p in [*parts, encoder.flush()]], -1)  # tensors (torch) or numpy (ONNX)


def pipe_codes(model_name: str, runtime: str, wav: Path, rng: random.Random) -> np.ndarray:
    cmd = [sys.executable, "-m", "codec", "--threads", "1", "stream-encode", "-m", model_name, "--runtime", runtime]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    data = wav.read_bytes()
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))
    reader.start()
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 33, 641, 4001, 32000])
        proc.stdin.write(data[i : i + n])
        proc.stdin.flush()
        i += n
        if rng.random() < 0.05:
            time.sleep(0.002)  # let the encoder read what is there: the reads then split mid-frame
    proc.stdin.close()
    reader.join()
    if proc.wait() != 0:
        raise SystemExit(f"stream-encode failed: {proc.stderr.read().decode()}")
    return codes_of(out[0])


def server_codes(model, clips: list[np.ndarray], rate: int) -> list[np.ndarray]:
    from codec.server.serve import encode_remote, serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop, ready = asyncio.new_event_loop(), asyncio.Event()
    threading.Thread(
        target=lambda: loop.run_until_complete(serve(model, "127.0.0.1", port, ready)), daemon=True
    ).start()
    while not ready.is_set():
        time.sleep(0.05)
    url = f"ws://127.0.0.1:{port}"

    async def main():
        return await asyncio.gather(*[encode_remote(url, a, rate, chunk_seconds=0.0071 * (1 + i % 5))
                                      for i, a in enumerate(clips)])  # fmt: skip

    return [codes_of(data) for data in asyncio.run(main())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of real recordings (searched for *.wav, *.flac)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="at most this much of each clip")
    parser.add_argument("--model", default=None, help="model name or file (default: the shipped default)")
    parser.add_argument("--runtimes", default="torch,onnx")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.model = args.model or default_model_name(NO_DEFAULT)
    torch.set_num_threads(1)
    files = sorted(p for p in Path(args.data).rglob("*") if p.suffix in (".wav", ".flac"))[: args.clips]
    if not files:
        raise SystemExit(f"no .wav or .flac files under {args.data}")
    base = load_model(args.model)
    rate = base.sample_rate
    clips = []
    for path in files:
        audio, r = read_audio(path)
        audio = resample(audio.mean(0, keepdims=True), r, rate)[:, : int(args.seconds * rate)]
        clips.append((np.round(audio * 32767) / 32768).astype(np.float32))  # on the s16 grid the WAV and PCM carry
    tmp = Path(tempfile.mkdtemp())
    totals: dict[str, list[int]] = {}
    for runtime in args.runtimes.split(","):
        live, files_model = with_runtime(base, runtime, live=True), with_runtime(base, runtime)
        rng = random.Random(args.seed)
        served = server_codes(live, clips, rate)
        for path, audio, from_server in zip(files, clips, served, strict=True):
            wav = tmp / "clip.wav"
            sf.write(wav, audio.T, rate, subtype="PCM_16")
            ref = live_codes(live, audio, [base.hop_length] * -(-audio.shape[1] // base.hop_length))
            out = io.BytesIO()
            encode_audio(files_model, audio, rate, out, levels=base.num_levels)
            paths = {
                "file": codes_of(out.getvalue()),
                "chunks": live_codes(live, audio, random_chunks(audio.shape[1], base.hop_length, rng)),
                "pipe": pipe_codes(args.model, runtime, wav, rng),
                "server": from_server,
            }
            for name, codes in paths.items():
                row = {"clip": path.name, "runtime": runtime, "path": name, **compare(ref, codes, base.num_groups)}
                print(json.dumps(row), flush=True)
                t = totals.setdefault(f"{runtime}/{name}", [0, 0])
                t[0] += row.get("frames_differ", row.get("frames", 0))
                t[1] += row.get("frames", 0)
    summary = {k: f"{d} of {n} frames differ" for k, (d, n) in totals.items()}
    print(json.dumps({"what": "streaming_codes_vs_live_frame_by_frame", "clips": len(files), **summary}))


if __name__ == "__main__":
    os.environ.setdefault("CODEC_CACHE_DIR", tempfile.mkdtemp())  # ONNX graphs exported for this run only
    main()
