#!/usr/bin/env python
"""Fuzz the .codes reader by the hundred thousand: mutated files through the library and `codec decode`.

    python tools/fuzz_codes.py --cases 100000            # or --minutes 10; --jobs N worker processes
    python tools/fuzz_codes.py --cases 2000 --seed 7     # reproducible: seed + chunk number name each case

Cases and the rule they are held to live in tests/fuzzing.py (the slow test runs the same on fewer cases).
Chunks of cases run in worker processes, so that a crash (a segmentation fault, say) is caught and reported
with the chunk's seed instead of ending the run. Prints one JSON line per chunk to stderr, then the totals
to stdout; exits 1 if any case broke the rule.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(seed: int, count: int, cli_every: int, max_rss_mib: float) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from codec.checkpoint import save_model
    from tests import fuzzing
    from tests.conftest import make_tiny

    torch.set_num_threads(1)
    model = make_tiny()
    with tempfile.TemporaryDirectory(prefix="fuzz-codes-") as tmp:
        os.environ["CODEC_CACHE_DIR"] = str(Path(tmp) / "cache")  # the tiny model's ONNX graphs, not in the user's
        model_file = Path(tmp) / "tiny.safetensors"
        save_model(model, model_file)
        outcomes, failures = fuzzing.run(
            model, model_file, seed, count, Path(tmp), cli_every=cli_every, max_rss_mib=max_rss_mib
        )
    print(json.dumps({"outcomes": outcomes, "failures": failures, "peak_rss_mib": round(fuzzing.peak_rss_mib())}))


def run_chunk(seed: int, args) -> dict:
    argv = [sys.executable, __file__, "--worker", "--seed", str(seed), "--cases", str(args.chunk),
            "--cli-every", str(args.cli_every), "--max-rss-mib", str(args.max_rss_mib)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or [""]
        return {"outcomes": {"worker crashed": 1}, "failures": [f"seed {seed}: exit {result.returncode} {tail[0]}"]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=100_000, help="cases to run (library decodes)")
    p.add_argument("--minutes", type=float, default=None, help="stop starting new chunks after this long")
    p.add_argument("--seed", type=int, default=0, help="chunk k uses seed SEED + k")
    p.add_argument("--chunk", type=int, default=2000, help="cases per worker process")
    p.add_argument("--jobs", type=int, default=1, help="worker processes at once")
    p.add_argument("--cli-every", type=int, default=10, help="also decode every Nth case with `codec decode`")
    p.add_argument("--max-rss-mib", type=float, default=3072, help="peak memory bound of a worker")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.seed, args.cases, args.cli_every, args.max_rss_mib)
        return 0
    start = time.monotonic()
    chunks = -(-args.cases // args.chunk)
    totals: Counter = Counter()
    failures: list[str] = []
    peak = 0

    def one(k: int) -> dict | None:
        if args.minutes is not None and time.monotonic() - start > args.minutes * 60:
            return None
        return run_chunk(args.seed + k, args)

    with ThreadPoolExecutor(args.jobs) as pool:
        for k, result in enumerate(pool.map(one, range(chunks))):
            if result is None:
                continue
            totals.update(result["outcomes"])
            failures += result["failures"]
            peak = max(peak, result.get("peak_rss_mib", 0))
            print(json.dumps({"chunk": k, "seed": args.seed + k, **result["outcomes"]}), file=sys.stderr, flush=True)
    cases = sum(v for k, v in totals.items() if k.startswith("library"))
    summary = {"cases": cases, "outcomes": dict(sorted(totals.items())), "failures": len(failures),
               "peak_rss_mib": peak, "seconds": round(time.monotonic() - start)}  # fmt: skip
    print(json.dumps(summary))
    for line in failures[:50]:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
