"""Wall time of every coding verb as a user runs it (a fresh `codec` process each time), per runtime and thread
setting, interleaved so that a load that comes and goes falls on every setting alike. One JSON line per cell:

    python tools/bench_verbs.py --repeats 5                       # the machine as it is (say how it is loaded)
    python tools/bench_verbs.py --repeats 5 --busy 1              # plus one busy process of this script's own

Settings: `default` (no --threads), `t1` (`--threads 1`), `t2` (`--threads 2`); runtimes: `onnx` (the default,
`--runtime auto`) and `torch`. Each cell is run once to warm up (the first run of a fresh cache builds the ONNX
graphs: reported as `first_run_s`), then `--repeats` times; the line gives the median wall time, every time, and
the ratio of the median to the `t1` median of the same verb and runtime. The live pipe (`stream-encode |
stream-decode` of 10 s, fed as fast as it reads) reports x real time. docs/BENCHMARKS.md, "Every verb beside a
busy process", records a run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

CLIP = Path(__file__).parents[1] / "codec" / "assets" / "speech_en.flac"
SETTINGS = {"default": [], "t1": ["--threads", "1"], "t2": ["--threads", "2"], "before": []}


def spin() -> None:
    while True:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv: list[str], *, stdin: Path | None = None, shell: str | None = None, env: dict | None = None) -> float:
    start = time.perf_counter()
    if shell:
        done = subprocess.run(shell, shell=True, capture_output=True, env=env)
    else:
        with open(stdin, "rb") if stdin else open(os.devnull, "rb") as f:
            done = subprocess.run(argv, stdin=f, capture_output=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {shell or argv}\n{done.stderr.decode()[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--busy", type=int, default=0, help="busy processes of this script's own beside the runs")
    ap.add_argument("--runtimes", default="onnx,torch")
    ap.add_argument("--settings", default="default,t1,t2")
    ap.add_argument("--before", default=None, help="PYTHONPATH of an older checkout: setting `before` runs it")
    ap.add_argument("--verbs", default="encode,decode,encode_many,decode_many,stream_encode,stream_decode,pipe,"
                    "stream_client,demo,tokens")  # fmt: skip
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-verbs-"))
    os.environ["CODEC_CACHE_DIR"] = str(work / "cache")  # a fresh install's empty cache
    codec = [sys.executable, "-m", "codec"]
    audio, rate = sf.read(CLIP, dtype="float32")
    ten = np.tile(audio, 2)[: 10 * rate]
    sf.write(work / "in16.wav", ten, rate, subtype="PCM_16")
    (work / "many").mkdir()
    for i in range(4):
        sf.write(work / "many" / f"c{i}.wav", np.roll(audio, 1000 * i), rate, subtype="PCM_16")
    start = time.perf_counter()  # a fresh install's first run: builds the default model's graphs
    subprocess.run([*codec, "encode", str(CLIP), str(work / "clip.codes"), "-q"], check=True)
    print(json.dumps({"what": "first_encode_of_a_fresh_cache", "wall_s": round(time.perf_counter() - start, 3)}))
    subprocess.run([*codec, "--threads", "1", "encode", str(work / "many"), str(work / "many_codes"), "-q"],
                   check=True)  # fmt: skip
    subprocess.run([*codec, "--threads", "1", "stream-encode", "-b", "3"], stdin=open(work / "in16.wav", "rb"),
                   stdout=open(work / "live.codes", "wb"), check=True)  # fmt: skip

    def env_of(setting: str) -> dict | None:
        return {**os.environ, "PYTHONPATH": args.before} if setting == "before" else None

    def cell_argv(verb: str, runtime: str, setting: str) -> dict:
        g = [*codec, *SETTINGS[setting]]
        rt = ["--runtime", "torch" if runtime == "torch" else "onnx" if setting == "before" else "auto"]
        out = work / f"out-{verb}-{runtime}-{setting}"
        if verb == "encode":
            return {"argv": [*g, "encode", str(CLIP), f"{out}.codes", *rt, "-q"]}
        if verb == "decode":
            return {"argv": [*g, "decode", str(work / "clip.codes"), f"{out}.wav", *rt, "-q"]}
        if verb == "encode_many":
            return {"argv": [*g, "encode", str(work / "many"), str(out), *rt, "-q"]}
        if verb == "decode_many":
            return {"argv": [*g, "decode", str(work / "many_codes"), str(out), *rt, "-q"]}
        if verb == "stream_encode":
            return {"argv": [*g, "stream-encode", "-b", "3", *rt], "stdin": work / "in16.wav"}
        if verb == "stream_decode":
            return {"argv": [*g, "stream-decode", *rt], "stdin": work / "live.codes"}
        if verb == "pipe":
            enc = " ".join([*g, "stream-encode", "-b", "3", *rt])
            dec = " ".join([*g, "stream-decode", *rt])
            return {"shell": f"{enc} < {work / 'in16.wav'} | {dec} > /dev/null", "audio_s": 10.0}
        if verb == "demo":
            return {"argv": [*g, "demo", *([] if setting == "before" else rt), "--out-dir", str(out)]}
        if verb == "tokens":
            return {"argv": [*g, "tokens", "--data", str(work / "many"), "--out", str(out), "--num-workers", "0",
                             "--device", "cpu", "-q"], "fresh": out}  # fmt: skip
        if verb == "stream_client":
            return {"argv": [*codec, "stream-client", "encode", str(CLIP), f"{out}.codes", "--url",
                             servers[runtime, setting]]}  # fmt: skip
        raise SystemExit(f"unknown verb {verb}")

    runtimes, settings, verbs = args.runtimes.split(","), args.settings.split(","), args.verbs.split(",")
    busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    servers, procs = {}, []
    try:
        if "stream_client" in verbs:
            for runtime in runtimes:
                for setting in settings:
                    port = free_port()
                    rt = ["--runtime", "torch" if runtime == "torch" else "onnx" if setting == "before" else "auto"]
                    procs.append(subprocess.Popen([*codec, *SETTINGS[setting], "serve", *rt, "--port", str(port)],
                                                  stderr=subprocess.PIPE, text=True, env=env_of(setting)))  # fmt: skip
                    while "listening" not in procs[-1].stderr.readline():
                        pass
                    servers[runtime, setting] = f"ws://127.0.0.1:{port}"
        cells = [
            (v, r, s)
            for v in verbs
            for r in runtimes
            for s in settings
            if not (v == "tokens" and r == "onnx") and not (v == "demo" and r == "onnx" and s == "before")
        ]  # fmt: skip (the old demo ran torch)
        times: dict[tuple, list[float]] = {c: [] for c in cells}
        first: dict[tuple, float] = {}
        load = os.getloadavg()
        for rep in range(args.repeats + 1):
            for cell in cells:
                spec = cell_argv(*cell)
                if spec.get("fresh"):
                    subprocess.run(["rm", "-rf", str(spec["fresh"])])
                wall = run(spec.get("argv", []), stdin=spec.get("stdin"), shell=spec.get("shell"), env=env_of(cell[2]))
                (times[cell].append(wall) if rep else first.setdefault(cell, wall))
                # every run as it ends, on stderr: a run cut short still leaves its figures
                print(json.dumps({"verb": cell[0], "runtime": cell[1], "threads": cell[2], "repeat": rep,
                                  "wall_s": round(wall, 3)}), file=sys.stderr, flush=True)  # fmt: skip
        for (verb, runtime, setting), walls in times.items():
            median = statistics.median(walls)
            t1 = statistics.median(times[verb, runtime, "t1"]) if (verb, runtime, "t1") in times else None
            spec = cell_argv(verb, runtime, setting)
            row = {"verb": verb, "runtime": runtime, "threads": setting, "median_s": round(median, 3),
                   "walls_s": [round(w, 3) for w in walls], "first_run_s": round(first[verb, runtime, setting], 3),
                   "ratio_to_t1": round(median / t1, 3) if t1 else None, "busy_own": args.busy,
                   "loadavg_at_start": load}  # fmt: skip
            if "audio_s" in spec:
                row["x_real_time"] = round(spec["audio_s"] / median, 2)
            print(json.dumps(row), flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in busy:
            p.terminate()


if __name__ == "__main__":
    main()
