#!/usr/bin/env python
"""Load a `codec serve` with N concurrent real-time encode sessions and report per-frame latency.

Each session streams 16-bit PCM at the model's rate in 20 ms chunks, paced to real time, asks for one packet per
frame, and times every packet from the moment the last sample of its frame was sent to the moment the packet
arrived. Prints one JSON line per session count: latency p50 / p99 / max over all frames of all sessions, and
how many sessions kept up (p99 under one frame).

    codec serve --model grvq16k --runtime onnx --port 8765 &
    python tools/serve_load.py --url ws://127.0.0.1:8765 --sessions 1,2,4,8 --seconds 10

Start the server yourself (any runtime, any machine); `--spawn MODEL` starts one here for the run instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import numpy as np


async def session(url: str, seconds: float, rate: int, seed: int) -> list[float]:
    """One real-time encode stream; returns the latency in ms of every packet after the header."""
    from websockets.asyncio.client import connect

    rng = np.random.default_rng(seed)
    chunk = rate // 50  # 20 ms
    audio = (0.1 * rng.standard_normal(int(seconds * rate))).clip(-1, 1)
    pcm = (audio * 32767).astype("<i2")
    latencies: list[float] = []
    async with connect(url, max_size=2**24) as ws:
        start = {"type": "start", "mode": "encode", "sample_rate": rate, "channels": 1, "format": "s16le"}
        await ws.send(json.dumps(start))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"the server refused the stream: {ready}")
        frame = int(round(ready["frame_samples"]))
        sent_at: dict[int, float] = {}  # frame index -> when its last sample went out
        header = True

        async def receive() -> None:
            nonlocal header
            index = 0
            async for message in ws:
                if isinstance(message, str):
                    if json.loads(message).get("type") == "done":
                        return
                    continue
                if header:  # the .codes header comes first
                    header = False
                    continue
                if index in sent_at:
                    latencies.append(1000 * (time.perf_counter() - sent_at[index]))
                index += 1

        receiver = asyncio.create_task(receive())
        t0 = time.perf_counter()
        for i in range(0, len(pcm), chunk):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))  # real time
            await ws.send(pcm[i : i + chunk].tobytes())
            done = (i + chunk) // frame
            now = time.perf_counter()
            for f in range(len(sent_at), done):
                sent_at[f] = now
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    return latencies


async def load(url: str, sessions: int, seconds: float, rate: int) -> dict:
    results = await asyncio.gather(*(session(url, seconds, rate, seed) for seed in range(sessions)))
    every = np.concatenate([np.asarray(r) for r in results if r]) if any(results) else np.zeros(0)
    kept_up = sum(1 for r in results if r and np.percentile(r, 99) < 20.0)
    return {
        "what": "serve_frame_latency", "sessions": sessions, "seconds": seconds, "frames": int(every.size),
        "p50_ms": round(float(np.percentile(every, 50)), 1), "p99_ms": round(float(np.percentile(every, 99)), 1),
        "max_ms": round(float(every.max()), 1), "sessions_with_p99_under_a_frame": kept_up,
    }  # fmt: skip


def _cpu_seconds(server) -> float:
    """User + system CPU seconds of a spawned server process so far (Linux /proc); 0 without one."""
    if server is None:
        return 0.0
    import os

    fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8765")
    parser.add_argument("--sessions", default="1,2,4", help="comma-separated session counts, run one after another")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per session")
    parser.add_argument("--rate", type=int, default=16000, help="PCM rate sent (the model's avoids a resampler)")
    parser.add_argument("--spawn", metavar="MODEL", default=None, help="start `codec serve --model MODEL` for the run")
    parser.add_argument("--runtime", default="auto", help="with --spawn: the server's --runtime")
    args = parser.parse_args()
    server = None
    if args.spawn:
        port = args.url.rsplit(":", 1)[1]
        server = subprocess.Popen([sys.executable, "-m", "codec", "--threads", "1", "serve", "--model", args.spawn,
                                   "--runtime", args.runtime, "--port", port], stderr=subprocess.PIPE)  # fmt: skip
        while b"listening" not in server.stderr.readline():
            if server.poll() is not None:
                raise SystemExit("the server did not start")
        import threading

        threading.Thread(target=server.stderr.read, daemon=True).start()  # keep draining its log
    try:
        for n in (int(s) for s in args.sessions.split(",")):
            before = _cpu_seconds(server)
            row = {**asyncio.run(load(args.url, n, args.seconds, args.rate)), "runtime": args.runtime}
            if server is not None:  # the server's CPU time per second of audio it coded, all sessions together
                row["server_cpu_per_audio_s"] = round((_cpu_seconds(server) - before) / (n * args.seconds), 3)
            print(json.dumps(row), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
