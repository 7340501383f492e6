#!/usr/bin/env python
"""Are the bytes every coding path writes the same as before a change? sha256 per model, runtime, path and clip.

For each model (`--models`, names or files; every shipped model by default) and runtime (`--runtimes`), every
clip is encoded by each path:
  - `file`: `codec encode CLIP OUT.codes` (one file; the bitrate rounds down between supported ones);
  - `chunks`: `codec.coding.compress.encode_blocks` fed random blocks on the live runtime (length in an end record);
  - `pipe`: `codec stream-encode` reading the clip as a WAV on stdin;
  - `server`: `codec serve` in this process, `codec.server.serve.encode_remote` one clip at a time (so that the
    batcher's calls, and with them torch's rounding, do not depend on timing);
  - `batch`: `codec encode FOLDER OUT_FOLDER`;
and the file path's `.codes` are decoded by `codec decode` (one file and a folder), `codec stream-decode` and the
server. The CLI verbs run in this process (`codec.cli.main`, stdin and stdout swapped for bytes), on one thread,
so that nothing depends on how a pipe happens to split the bytes. One JSON object of hashes is written to `--out`;
with `--against BASELINE.json` every hash is compared and the differences are listed (exit status 1 if any).

    python tools/check_codes_hashes.py --data ../shared/data/dev/speech --out /tmp/before.json
    python tools/check_codes_hashes.py --data ../shared/data/dev/speech --out /tmp/after.json --against /tmp/before.json

The clips: the shortest, a middle and a longer one of `--data` (sorted by duration), the last of them resampled to
22.05 kHz and made stereo (the resampler and per-channel paths). Set CODEC_CACHE_DIR to keep the ONNX graphs
between runs (the default is a fixed folder under the system's temporary folder).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def pick_clips(data: Path, tmp: Path) -> list[Path]:
    from codec.audio import resample

    infos = []
    for path in sorted(p for p in data.rglob("*") if p.suffix in (".wav", ".flac")):
        infos.append((sf.info(str(path)).duration, str(path)))
    infos.sort()
    chosen = [infos[0][1], infos[len(infos) // 2][1], infos[min(len(infos) - 1, int(len(infos) * 0.9))][1]]
    clips = tmp / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(chosen):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.T[:1, : 4 * rate]  # mono, at most 4 s
        if i == 2:
            audio = resample(audio, rate, 22050)
            audio, rate = np.concatenate([audio, 0.5 * audio[:, ::-1]]), 22050
        target = clips / f"clip{i}.wav"
        sf.write(str(target), audio.T, rate, subtype="PCM_16")
        out.append(target)
    return out


def cli(argv: list[str], stdin: bytes = b"") -> bytes:
    """`codec ARGV` in this process; its stdout bytes."""
    from codec import cli as codec_cli

    old_in, old_out = sys.stdin, sys.stdout
    out = io.BytesIO()
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout = io.TextIOWrapper(out, write_through=True)
    try:
        rc = codec_cli.main(["--threads", "1", *argv])
        sys.stdout.flush()
    finally:
        sys.stdin.detach(), sys.stdout.detach()  # the wrappers go; the bytes stay readable
        sys.stdin, sys.stdout = old_in, old_out
    if rc != 0:
        raise SystemExit(f"codec {' '.join(argv)} exited with {rc}")
    return out.getvalue()


def start_server(model) -> str:
    from codec.server.serve import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop, ready = asyncio.new_event_loop(), asyncio.Event()
    serving = serve(model, "127.0.0.1", port, ready)
    threading.Thread(target=lambda: loop.run_until_complete(serving), daemon=True).start()
    while not ready.is_set():
        time.sleep(0.05)
    return f"ws://127.0.0.1:{port}"


def run(model_name: str, runtime: str, clips: list[Path], tmp: Path, hashes: dict) -> None:
    from codec import load_model
    from codec.audio import read_audio
    from codec.coding.compress import EncodeSession, encode_blocks
    from codec.runtimes.runtime import with_runtime
    from codec.server.serve import decode_remote_sync, encode_remote_sync

    base = load_model(model_name)
    rates = base.supported_bitrates()
    kbps = f"{(rates[len(rates) // 2] + rates[len(rates) // 2 - 1]) / 2000:g}"  # between two: rounds down
    key = f"{Path(model_name).stem}/{runtime}"
    folder = tmp / key.replace("/", "_")
    (folder / "in").mkdir(parents=True, exist_ok=True)
    rt = ["-m", model_name, "--runtime", runtime]
    rng = random.Random(0)
    live = with_runtime(base, runtime, live=True)
    url = start_server(live)
    for clip in clips:
        (folder / "in" / clip.name).write_bytes(clip.read_bytes())
        name = clip.stem
        codes_path = folder / f"{name}.codes"
        cli(["encode", str(clip), str(codes_path), *rt, "-b", kbps, "-q"])
        codes = codes_path.read_bytes()
        hashes[f"{key}/encode/file/{name}"] = sha(codes)
        audio, rate = read_audio(clip)
        sizes, start = [], 0
        while start < audio.shape[1]:
            sizes.append(rng.choice([1, 7, 319, 320, 321, 999, 16000]))
            start += sizes[-1]
        starts = np.cumsum([0, *sizes])
        out = io.BytesIO()
        session = EncodeSession(live, out, sample_rate=rate, channels=audio.shape[0], levels=2, num_samples=None)
        encode_blocks(live, (audio[:, a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)), session)
        hashes[f"{key}/encode/chunks/{name}"] = sha(out.getvalue())
        hashes[f"{key}/encode/pipe/{name}"] = sha(cli(["stream-encode", *rt, "-l", "2"], clip.read_bytes()))
        served = encode_remote_sync(url, audio, rate, levels=2, chunk_seconds=0.0137)
        hashes[f"{key}/encode/server/{name}"] = sha(served)
        wav = folder / f"{name}.wav"
        cli(["decode", str(codes_path), str(wav), *rt, "-q"])
        hashes[f"{key}/decode/file/{name}"] = sha(wav.read_bytes())
        hashes[f"{key}/decode/pipe/{name}"] = sha(cli(["stream-decode", *rt], codes))
        decoded, _ = decode_remote_sync(url, codes)
        hashes[f"{key}/decode/server/{name}"] = sha(np.ascontiguousarray(decoded, np.float32).tobytes())
    cli(["encode", str(folder / "in"), str(folder / "codes"), *rt, "-b", kbps, "-q"])
    for path in sorted((folder / "codes").glob("*.codes")):
        hashes[f"{key}/encode/batch/{path.stem}"] = sha(path.read_bytes())
    cli(["decode", str(folder / "codes"), str(folder / "decoded"), *rt, "-q"])
    for path in sorted((folder / "decoded").glob("*.wav")):
        hashes[f"{key}/decode/batch/{path.stem}"] = sha(path.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of real recordings (*.wav, *.flac)")
    parser.add_argument("--models", help="comma-separated model names or files (default: every shipped model)")
    parser.add_argument("--runtimes", default="auto,torch")
    parser.add_argument("--out", required=True, help="the JSON file of hashes to write")
    parser.add_argument("--against", help="a JSON file of hashes written before: compare with it")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="codec-hashes-"))
    clips = pick_clips(Path(args.data), tmp)
    hashes: dict[str, str] = {}
    from codec import pretrained

    models = args.models.split(",") if args.models else [m.name for m in pretrained.shipped_models()]
    for model in models:
        for runtime in args.runtimes.split(","):
            run(model, runtime, clips, tmp, hashes)
            print(f"{model} {runtime}: {len(hashes)} hashes so far", file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    if args.against:
        before = json.loads(Path(args.against).read_text())
        differ = sorted(k for k in before.keys() | hashes.keys() if before.get(k) != hashes.get(k))
        for k in differ:
            print(f"differs: {k}: {before.get(k)} -> {hashes.get(k)}")
        print(json.dumps({"hashes": len(hashes), "compared": len(before), "differ": len(differ)}))
        raise SystemExit(1 if differ else 0)
    print(json.dumps({"hashes": len(hashes)}))


if __name__ == "__main__":
    os.environ.setdefault("CODEC_CACHE_DIR", str(Path(tempfile.gettempdir()) / "codec-hashes-cache"))
    main()
